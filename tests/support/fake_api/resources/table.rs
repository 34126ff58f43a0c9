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
    /// Whether server-side apply is served (see `apply`); other resources
    /// answer an apply patch with 415.
    pub applies: bool,
    /// Whether objects carry `metadata.generation` (1 on create, bumped by
    /// each change of their content and by the start of a graceful
    /// deletion). The real server sets it only where the resource's
    /// strategy does: of the resources served here, Pods (since v1.33) and
    /// custom resources; PVs, PVCs, Nodes, ConfigMaps, namespaces, events,
    /// storage classes and leases come without it.
    pub generation: bool,
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

/// A `v1` resource of `group` whose names are RFC 1123 subdomains.
const fn v1(
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    has_status: bool,
    extra_fields: &'static [&'static str],
) -> ResourceDef {
    ResourceDef {
        group,
        version: "v1",
        plural,
        kind,
        namespaced,
        has_status,
        extra_fields,
        name_rule: NameRule::Subdomain,
        applies: false,
        generation: false,
    }
}

/// Field selectors of `events.k8s.io` events.
const EVENTS_API_FIELDS: &[&str] = &[
    "reason",
    "reportingController",
    "type",
    "regarding.kind",
    "regarding.name",
];

/// Every resource the fake serves; indexes into this table identify resources.
pub const RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        name_rule: NameRule::Label,
        ..v1(
            "",
            "namespaces",
            "Namespace",
            false,
            true,
            &["status.phase"],
        )
    },
    v1("", "nodes", "Node", false, true, &["spec.unschedulable"]),
    v1("", "configmaps", "ConfigMap", true, false, &[]),
    v1(
        "",
        "persistentvolumes",
        "PersistentVolume",
        false,
        true,
        &[],
    ),
    v1(
        "",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
        true,
        &[],
    ),
    v1("", "events", "Event", true, false, EVENT_FIELDS),
    v1(
        "events.k8s.io",
        "events",
        "Event",
        true,
        false,
        EVENTS_API_FIELDS,
    ),
    v1(
        "storage.k8s.io",
        "storageclasses",
        "StorageClass",
        false,
        false,
        &[],
    ),
    ResourceDef {
        generation: true,
        ..v1(
            "",
            "pods",
            "Pod",
            true,
            true,
            &["spec.nodeName", "status.phase"],
        )
    },
    ResourceDef {
        applies: true,
        ..v1("coordination.k8s.io", "leases", "Lease", true, false, &[])
    },
    // The product's own CRD (config/crd), as installed: see `crd`. Custom
    // resources always carry `metadata.generation` on a real server.
    ResourceDef {
        version: "v1alpha1",
        generation: true,
        ..v1(
            "local-pv-provisioner.cybozu.io",
            "localdisks",
            "LocalDisk",
            false,
            true,
            &[],
        )
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
/// Resource id of `leases` (`coordination.k8s.io/v1`).
pub const LEASES: usize = 9;
/// Resource id of `localdisks` (`local-pv-provisioner.cybozu.io/v1alpha1`).
pub const LOCAL_DISKS: usize = 10;

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
