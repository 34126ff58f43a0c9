//! Which PV spec applies to this node, decided from snapshots: the Node's
//! annotation (or the `--default-pv-spec-configmap` fallback) names a
//! ConfigMap, and the ConfigMap's data is parsed into a [`PvSpec`]. Every
//! outcome is a [`SpecState`], which the reporter turns into one Event and
//! log line per change. Pure: the watches and the reporting live elsewhere.

use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Node};

use crate::objects::naming::is_dns1123_subdomain;
use crate::objects::reasons;
use crate::objects::spec::{NodeSpec, PV_SPEC_CONFIGMAP_ANNOTATION, PvSpec, parse_node_spec};
use crate::observe::events::Severity;

/// Where the node's PV spec stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecState {
    /// The Node object is not visible.
    NodeMissing,
    /// Neither the annotation nor the default flag names a ConfigMap.
    NotConfigured,
    /// The named ConfigMap does not exist.
    ConfigMapMissing(String),
    /// The ConfigMap (or the name given for it) is invalid: its name and the error.
    Invalid(String, String),
    /// `deviceDir` cannot be read: the ConfigMap's name and the error.
    DeviceDirUnreadable(String, String),
    /// The spec is valid and in use.
    Ready {
        /// The ConfigMap's name.
        configmap: String,
        /// The spec's values (logged at debug level only).
        summary: String,
        /// The `deviceDir`s that do not exist (yet): no devices there.
        missing_dirs: Vec<String>,
    },
}

impl SpecState {
    /// Whether the state is an error (`local_pv_provisioner_pv_spec_errors` 1).
    pub fn is_error(&self) -> bool {
        !matches!(self, SpecState::Ready { .. } | SpecState::NotConfigured)
    }

    /// The Event this state raises on the Node.
    pub fn event(&self) -> (Severity, &'static str) {
        match self {
            SpecState::Ready { .. } => (Severity::Normal, reasons::PV_SPEC_APPLIED),
            SpecState::NotConfigured => (Severity::Normal, reasons::PV_SPEC_NOT_CONFIGURED),
            SpecState::ConfigMapMissing(_) => (Severity::Warning, reasons::PV_SPEC_NOT_FOUND),
            SpecState::Invalid(..) => (Severity::Warning, reasons::PV_SPEC_INVALID),
            SpecState::DeviceDirUnreadable(..) => {
                (Severity::Warning, reasons::DEVICE_DIR_UNREADABLE)
            }
            SpecState::NodeMissing => (Severity::Warning, reasons::NODE_MISSING),
        }
    }
}

impl fmt::Display for SpecState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PAUSED: &str = "no PV is created or deleted";
        match self {
            SpecState::NodeMissing => write!(f, "the Node object is not found"),
            SpecState::NotConfigured => write!(
                f,
                "no PV spec ConfigMap: the Node has no {PV_SPEC_CONFIGMAP_ANNOTATION} annotation and no --default-pv-spec-configmap is set; the node is left alone"
            ),
            SpecState::ConfigMapMissing(name) => {
                write!(f, "PV spec ConfigMap {name:?} is not found; {PAUSED}")
            }
            SpecState::Invalid(name, error) => {
                write!(
                    f,
                    "PV spec ConfigMap {name:?} is invalid: {error}; {PAUSED}"
                )
            }
            SpecState::DeviceDirUnreadable(name, error) => {
                write!(f, "PV spec ConfigMap {name:?}: {error}; {PAUSED}")
            }
            SpecState::Ready {
                configmap,
                summary,
                missing_dirs,
            } => {
                write!(f, "using PV spec ConfigMap {configmap:?}: {summary}")?;
                if !missing_dirs.is_empty() {
                    write!(
                        f,
                        " (deviceDir does not exist yet: no devices in {})",
                        missing_dirs.join(", ")
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// Which ConfigMap holds the node's PV spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecSource {
    /// The ConfigMap of this name.
    ConfigMap(String),
    /// No ConfigMap: the node is left alone.
    Unusable(SpecState),
}

/// Reads the Node's annotation, falling back to `default`. An empty
/// annotation counts as absent; a value that is not a valid object name is
/// [`SpecState::Invalid`] (it could not be watched by name).
pub fn spec_source(node: &Node, default: Option<&str>) -> SpecSource {
    let annotated = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(PV_SPEC_CONFIGMAP_ANNOTATION))
        .filter(|name| !name.is_empty())
        .map(String::as_str);
    match annotated.or(default) {
        None => SpecSource::Unusable(SpecState::NotConfigured),
        Some(name) if !is_dns1123_subdomain(name) => SpecSource::Unusable(SpecState::Invalid(
            name.to_string(),
            format!(
                "annotation {PV_SPEC_CONFIGMAP_ANNOTATION} (or --default-pv-spec-configmap) is not a valid ConfigMap name"
            ),
        )),
        Some(name) => SpecSource::ConfigMap(name.to_string()),
    }
}

/// Parses the ConfigMap `name` (`None`: it does not exist).
pub fn read_spec(name: &str, configmap: Option<&ConfigMap>) -> Result<NodeSpec, SpecState> {
    let configmap = configmap.ok_or_else(|| SpecState::ConfigMapMissing(name.to_string()))?;
    let data = configmap.data.clone().unwrap_or_default();
    parse_node_spec(&data).map_err(|error| SpecState::Invalid(name.to_string(), error.to_string()))
}

/// The spec's values in one line, for the debug log and the `PVSpecApplied`
/// note: each class's (the class named only when the ConfigMap lists classes).
pub fn summarize(spec: &NodeSpec) -> String {
    let classes: Vec<String> = spec
        .classes
        .iter()
        .map(|class| summarize_class(class, spec.listed))
        .collect();
    let mut summary = classes.join("; ");
    if !spec.unknown_keys.is_empty() {
        summary.push_str(&format!(
            " (ignored unknown keys: {})",
            spec.unknown_keys.join(", ")
        ));
    }
    summary
}

fn summarize_class(spec: &PvSpec, named: bool) -> String {
    let mut summary = if named {
        format!("class {}: ", spec.class)
    } else {
        String::new()
    };
    summary.push_str(&format!(
        "deviceDir={} deviceNameFilter={:?} volumeMode={} storageClassName={}",
        spec.device_dir.display(),
        spec.device_name_filter_source,
        spec.volume_mode.as_str(),
        spec.storage_class_name
    ));
    if let Some(fs_type) = spec.fs_type {
        summary.push_str(&format!(" fsType={}", fs_type.as_str()));
    }
    if !spec.unknown_keys.is_empty() {
        summary.push_str(&format!(
            " (ignored unknown keys: {})",
            spec.unknown_keys.join(", ")
        ));
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(annotation: Option<&str>) -> Node {
        let mut node = Node::default();
        if let Some(value) = annotation {
            node.metadata.annotations = Some(BTreeMap::from([(
                PV_SPEC_CONFIGMAP_ANNOTATION.to_string(),
                value.to_string(),
            )]));
        }
        node
    }

    #[test]
    fn the_annotation_wins_over_the_default_and_empty_counts_as_absent() {
        assert_eq!(
            spec_source(&node(Some("fs")), Some("default")),
            SpecSource::ConfigMap("fs".into())
        );
        assert_eq!(
            spec_source(&node(Some("")), Some("default")),
            SpecSource::ConfigMap("default".into())
        );
        assert_eq!(
            spec_source(&node(None), None),
            SpecSource::Unusable(SpecState::NotConfigured)
        );
    }

    #[test]
    fn an_invalid_name_is_an_error_naming_the_value() {
        let SpecSource::Unusable(state) = spec_source(&node(Some("spec,other")), None) else {
            panic!("an invalid name must not be watched");
        };
        assert!(state.is_error());
        assert_eq!(state.event().1, "PVSpecInvalid");
        assert!(state.to_string().contains("\"spec,other\""), "{state}");
    }

    #[test]
    fn a_missing_or_invalid_configmap_pauses_the_node() {
        let missing = read_spec("fs", None).unwrap_err();
        assert_eq!(missing, SpecState::ConfigMapMissing("fs".into()));
        assert!(missing.to_string().contains("no PV is created or deleted"));
        let configmap = ConfigMap {
            data: Some(BTreeMap::from([("volumeMode".into(), "Sideways".into())])),
            ..ConfigMap::default()
        };
        let invalid = read_spec("fs", Some(&configmap)).unwrap_err();
        assert_eq!(invalid.event().1, "PVSpecInvalid");
    }
}
