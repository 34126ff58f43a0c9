//! What admission sees of a request: the operation, the user (with the
//! extras of a token bound to a pod on a node) and the objects, and the
//! `request` variable (an `admission.k8s.io/v1` AdmissionRequest) built
//! from them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The kind of write being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// POST.
    Create,
    /// PUT or PATCH.
    Update,
    /// DELETE.
    Delete,
}

impl Operation {
    /// `CREATE`, `UPDATE` or `DELETE`, as in `request.operation`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// The authenticated user of a request, as in `request.userInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// `system:serviceaccount:<namespace>:<name>` for a ServiceAccount.
    pub username: String,
    /// Groups of the user.
    pub groups: Vec<String>,
    /// Extra attributes; every value is a list of strings.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A ServiceAccount's user, with the groups the API server gives it and
    /// no extra (a token not bound to a pod).
    pub fn service_account(namespace: &str, name: &str) -> UserInfo {
        UserInfo {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            extra: BTreeMap::new(),
        }
    }

    /// A user that is not a ServiceAccount (an admin, a controller).
    pub fn user(username: &str) -> UserInfo {
        UserInfo {
            username: username.into(),
            groups: vec!["system:authenticated".into()],
            extra: BTreeMap::new(),
        }
    }

    /// The same user with the extras of a token bound to a pod on `node`
    /// (`authentication.kubernetes.io/node-name`, `node-uid`, `pod-name`,
    /// `pod-uid`), as Kubernetes 1.30+ puts them into a pod's token.
    pub fn on_node(mut self, node: &str) -> UserInfo {
        for (key, value) in [
            ("node-name", node.to_string()),
            ("node-uid", format!("uid-of-{node}")),
            ("pod-name", format!("local-pv-provisioner-{node}")),
            ("pod-uid", format!("pod-uid-on-{node}")),
        ] {
            let key = format!("authentication.kubernetes.io/{key}");
            self.extra.insert(key, vec![value]);
        }
        self
    }

    /// `request.userInfo` as JSON; `extra` is left out when empty, as the
    /// API server serializes it.
    pub fn to_json(&self) -> Value {
        let mut user = json!({"username": self.username, "uid": "", "groups": self.groups});
        if !self.extra.is_empty() {
            user["extra"] = json!(self.extra);
        }
        user
    }
}

/// One request as admission sees it.
#[derive(Debug, Clone)]
pub struct Review<'a> {
    /// What is done.
    pub operation: Operation,
    /// API group (`""` for core).
    pub group: &'a str,
    /// API version.
    pub version: &'a str,
    /// Resource plural.
    pub resource: &'a str,
    /// Subresource (`status`), if any.
    pub subresource: Option<&'a str>,
    /// Kind of the objects.
    pub kind: &'a str,
    /// Name of the object.
    pub name: &'a str,
    /// Who asks.
    pub user: &'a UserInfo,
    /// The object written (none for DELETE).
    pub object: Option<&'a Value>,
    /// The stored object (none for CREATE).
    pub old_object: Option<&'a Value>,
}

impl<'a> Review<'a> {
    /// A write to a PersistentVolume; the name comes from the object (or the
    /// stored object).
    pub fn persistent_volume(
        operation: Operation,
        user: &'a UserInfo,
        object: Option<&'a Value>,
        old_object: Option<&'a Value>,
    ) -> Review<'a> {
        let name = object
            .or(old_object)
            .and_then(|o| o["metadata"]["name"].as_str())
            .unwrap_or("");
        Review {
            operation,
            group: "",
            version: "v1",
            resource: "persistentvolumes",
            subresource: None,
            kind: "PersistentVolume",
            name,
            user,
            object,
            old_object,
        }
    }

    /// `request` as JSON (an `admission.k8s.io/v1` AdmissionRequest).
    pub(super) fn request(&self) -> Value {
        json!({
            "kind": {"group": self.group, "version": self.version, "kind": self.kind},
            "resource": {"group": self.group, "version": self.version, "resource": self.resource},
            "subResource": self.subresource.unwrap_or(""),
            "name": self.name,
            "namespace": "",
            "operation": self.operation.as_str(),
            "userInfo": self.user.to_json(),
            "dryRun": false,
        })
    }
}
