//! The table of resources the fake server serves: group, version, kind,
//! scope, `status` subresource, extra field selectors and name rule of
//! each, the ids of the ones the server treats specially, and lookups by
//! path or by qualified name.

/// How `metadata.name` of a resource is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most resources).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
}

/// One served resource type.
#[derive(Debug)]
pub struct ResourceDef {
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// API version inside the group.
    pub version: &'static str,
    /// Lowercase plural used in paths.
    pub plural: &'static str,
    /// Kind of the objects.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether the resource has a `/status` subresource (then writes to the main
    /// resource keep the stored `.status`).
    pub has_status: bool,
    /// Field selector labels supported besides `metadata.name`/`metadata.namespace`,
    /// resolved as dotted JSON paths.
    pub extra_fields: &'static [&'static str],
    /// Name validation rule.
    pub name_rule: NameRule,
}

impl ResourceDef {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Group-qualified resource name as the real server prints it in messages
    /// (`configmaps`, `events.events.k8s.io`); also the name tests use to look
    /// objects up.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Group-qualified kind (`PersistentVolume`, `Event.events.k8s.io`).
    pub(super) fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// Field selectors of core `events`.
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "type",
];

/// Every resource the fake serves; indexes into this table identify resources.
pub const RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        has_status: true,
        extra_fields: &["status.phase"],
        name_rule: NameRule::Label,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        has_status: true,
        extra_fields: &["spec.unschedulable"],
        name_rule: NameRule::Subdomain,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        has_status: false,
        extra_fields: &[],
        name_rule: NameRule::Subdomain,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "persistentvolumes",
        kind: "PersistentVolume",
        namespaced: false,
        has_status: true,
        extra_fields: &[],
        name_rule: NameRule::Subdomain,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        has_status: true,
        extra_fields: &[],
        name_rule: NameRule::Subdomain,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        has_status: false,
        extra_fields: EVENT_FIELDS,
        name_rule: NameRule::Subdomain,
    },
    ResourceDef {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        has_status: false,
        extra_fields: &[
            "reason",
            "reportingController",
            "type",
            "regarding.kind",
            "regarding.name",
        ],
        name_rule: NameRule::Subdomain,
    },
    ResourceDef {
        group: "storage.k8s.io",
        version: "v1",
        plural: "storageclasses",
        kind: "StorageClass",
        namespaced: false,
        has_status: false,
        extra_fields: &[],
        name_rule: NameRule::Subdomain,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        has_status: true,
        extra_fields: &["spec.nodeName", "status.phase"],
        name_rule: NameRule::Subdomain,
    },
];

/// Resource id of `namespaces`.
pub const NAMESPACES: usize = 0;
/// Resource id of `nodes`.
pub const NODES: usize = 1;
/// Resource id of `persistentvolumes`.
pub const PVS: usize = 3;
/// Resource id of `persistentvolumeclaims`.
pub const PVCS: usize = 4;
/// Resource id of `storageclasses` (`storage.k8s.io/v1`).
pub const STORAGE_CLASSES: usize = 7;

/// Finds a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by its qualified name (`persistentvolumes`,
/// `events.events.k8s.io`); panics with the list of known names otherwise.
pub fn by_name(qualified: &str) -> usize {
    RESOURCES
        .iter()
        .position(|r| r.qualified() == qualified)
        .unwrap_or_else(|| {
            let known: Vec<String> = RESOURCES.iter().map(ResourceDef::qualified).collect();
            panic!("fake API server: unknown resource {qualified:?}; known: {known:?}")
        })
}
