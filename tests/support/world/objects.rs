//! Creating, changing and deleting a world's API objects. On the fake API
//! server a world writes and reads the store directly, so that its own
//! requests neither show in the request log nor use up fault rules (as an
//! operator's kubectl would, from outside the program); on a cluster it uses
//! its client. Deletions always go through the client.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Node, PersistentVolume, PersistentVolumeClaim,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::backend::Backend;
use super::teardown::Created;
use super::{
    Data, HOSTNAME_LABEL, RUN_LABEL, SPEC_ANNOTATION, TAINT_KEY, World, hostname_of, lock,
};

/// A Kubernetes object type a world handles.
pub trait Object:
    Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + 'static
{
}

impl<K> Object for K where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + 'static
{
}

/// The fake store's name of `K`'s resource (`configmaps`,
/// `events.events.k8s.io`).
fn store_name<K: Object>() -> String {
    let group = K::group(&());
    if group.is_empty() {
        K::plural(&()).to_string()
    } else {
        format!("{}.{group}", K::plural(&()))
    }
}

/// `value` as a `K`; panics naming the type when it is not one.
fn typed<K: Object>(value: impl Serialize) -> K {
    let value = serde_json::to_value(value).expect("an object as JSON");
    serde_json::from_value(value).unwrap_or_else(|error| panic!("not a {}: {error}", K::kind(&())))
}

impl World {
    /// A dynamic client API for `K` in `namespace` (`None`: cluster-wide).
    pub(super) fn api<K: Object>(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = ApiResource::erase::<K>(&());
        match namespace {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Creates `object` (the JSON of a `K`, labelled with [`RUN_LABEL`]
    /// here), records it for teardown and returns it as stored.
    pub async fn create<K: Object>(&self, mut object: Value) -> K {
        object["metadata"]["labels"][RUN_LABEL] = json!(self.run);
        let namespace = object["metadata"]["namespace"].as_str().map(String::from);
        let created: K = match &self.backend {
            Backend::Fake(server) => typed(server.create_object(&store_name::<K>(), object)),
            Backend::Cluster(_) => {
                let name = object["metadata"]["name"].clone();
                let object = dynamic::<K>(object);
                let created = self
                    .api::<K>(namespace.as_deref())
                    .create(&PostParams::default(), &object)
                    .await
                    .unwrap_or_else(|error| panic!("creating {} {name}: {error}", K::kind(&())));
                typed(created)
            }
        };
        lock(&self.created).push(Created {
            resource: ApiResource::erase::<K>(&()),
            namespace,
            name: created.name_any(),
            uid: created.uid().expect("a created object has a UID"),
        });
        created
    }

    /// The `K` named `name` in `namespace`, if it exists.
    pub async fn get<K: Object>(&self, namespace: Option<&str>, name: &str) -> Option<K> {
        match &self.backend {
            Backend::Fake(server) => server
                .object(&store_name::<K>(), namespace, name)
                .map(typed),
            Backend::Cluster(_) => self
                .api::<K>(namespace)
                .get_opt(name)
                .await
                .unwrap_or_else(|error| panic!("reading {} {name}: {error}", K::kind(&())))
                .map(typed),
        }
    }

    /// Every `K` in `namespace` (`None`: in every namespace, or cluster-wide).
    pub async fn list<K: Object>(&self, namespace: Option<&str>) -> Vec<K> {
        match &self.backend {
            Backend::Fake(server) => server
                .objects(&store_name::<K>())
                .into_iter()
                .filter(|object| {
                    namespace.is_none_or(|ns| object["metadata"]["namespace"] == json!(ns))
                })
                .map(typed)
                .collect(),
            Backend::Cluster(_) => self
                .api::<K>(namespace)
                .list(&ListParams::default())
                .await
                .unwrap_or_else(|error| panic!("listing {}: {error}", K::plural(&())))
                .items
                .into_iter()
                .map(typed)
                .collect(),
        }
    }

    /// Reads the `K` named `name`, applies `edit` to its JSON and writes it
    /// back in one replace; returns it as stored.
    pub async fn modify<K: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
        edit: impl FnOnce(&mut Value),
    ) -> K {
        let current: K = self
            .get(namespace, name)
            .await
            .unwrap_or_else(|| panic!("{} {name} does not exist", K::kind(&())));
        let mut object = serde_json::to_value(current).expect("an object as JSON");
        edit(&mut object);
        match &self.backend {
            Backend::Fake(server) => typed(server.replace_object(&store_name::<K>(), object)),
            Backend::Cluster(_) => {
                let object = dynamic::<K>(object);
                let replaced = self
                    .api::<K>(namespace)
                    .replace(name, &PostParams::default(), &object)
                    .await
                    .unwrap_or_else(|error| panic!("replacing {} {name}: {error}", K::kind(&())));
                typed(replaced)
            }
        }
    }

    /// Deletes the `K` named `name` through the client, with a UID
    /// precondition when `uid` is given; NotFound counts as done.
    pub async fn delete<K: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
        uid: Option<String>,
    ) {
        let params = DeleteParams {
            preconditions: uid.map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api::<K>(namespace).delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => panic!("deleting {} {name}: {error}", K::kind(&())),
        }
    }

    /// Creates the world's namespace: done when the world is made, and
    /// again by a test whose fake server lost its store.
    pub async fn create_namespace(&self) {
        let object = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": self.namespace},
        });
        self.create::<Namespace>(object).await;
    }

    /// Creates ConfigMap `name` in the world's namespace, or replaces its
    /// data in one write.
    pub async fn put_configmap(&self, name: &str, data: Data) {
        let namespace = self.namespace.clone();
        self.put_configmap_in(&namespace, name, data).await;
    }

    /// Creates ConfigMap `namespace/name`, or replaces its data in one write.
    pub async fn put_configmap_in(&self, namespace: &str, name: &str, data: Data) {
        if self.get::<ConfigMap>(Some(namespace), name).await.is_some() {
            self.modify::<ConfigMap>(Some(namespace), name, |configmap| {
                configmap["data"] = json!(data);
            })
            .await;
            return;
        }
        let object = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": data,
        });
        self.create::<ConfigMap>(object).await;
    }

    /// Creates Node `name`, annotated with PV spec ConfigMap `spec` when
    /// given, with the label [`hostname_of`] and a NoSchedule taint.
    pub async fn add_node(&self, name: &str, spec: Option<&str>) -> Node {
        let mut object = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {HOSTNAME_LABEL: hostname_of(name)}},
            "spec": {"taints": [{"key": TAINT_KEY, "value": self.run, "effect": "NoSchedule"}]},
        });
        if let Some(spec) = spec {
            object["metadata"]["annotations"] = json!({ SPEC_ANNOTATION: spec });
        }
        self.create::<Node>(object).await
    }

    /// Points Node `node`'s annotation at ConfigMap `spec`.
    pub async fn annotate(&self, node: &str, spec: &str) {
        self.modify::<Node>(None, node, |object| {
            object["metadata"]["annotations"][SPEC_ANNOTATION] = json!(spec);
        })
        .await;
    }

    /// Sets a label on Node `node`: a change the program watches and that
    /// means nothing to it, to make it run a reconcile pass.
    pub async fn touch_node(&self, node: &str, value: &str) {
        self.modify::<Node>(None, node, |object| {
            object["metadata"]["labels"]["test-touch"] = json!(value);
        })
        .await;
    }

    /// Deletes one of the world's Nodes (with a UID precondition).
    pub async fn delete_node(&self, node: &Node) {
        self.delete::<Node>(None, &node.name_any(), node.uid())
            .await;
    }

    /// Creates the StorageClass named after the run: no provisioner,
    /// immediate binding.
    pub async fn create_storage_class(&self) {
        let object = json!({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": self.run},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "Immediate",
        });
        self.create::<StorageClass>(object).await;
    }

    /// Creates a Block claim of the run's storage class requesting
    /// `request`, for any fitting volume or for `volume` only.
    pub async fn create_claim(&self, name: &str, request: &str, volume: Option<&str>) {
        let mut spec = json!({
            "storageClassName": self.run,
            "volumeMode": "Block",
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": request}},
        });
        if let Some(volume) = volume {
            spec["volumeName"] = json!(volume);
        }
        let object = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        });
        self.create::<PersistentVolumeClaim>(object).await;
    }

    /// Deletes one of the world's claims.
    pub async fn delete_claim(&self, name: &str) {
        let namespace = self.namespace.clone();
        self.delete::<PersistentVolumeClaim>(Some(&namespace), name, None)
            .await;
    }

    /// Creates a PV straight into the fake store (a PV someone else made).
    pub fn create_foreign_pv(&self, object: Value) -> PersistentVolume {
        typed(self.server().create_object("persistentvolumes", object))
    }
}

/// The JSON of a `K` as the dynamic object the client sends.
fn dynamic<K: Object>(mut object: Value) -> DynamicObject {
    object["apiVersion"] = json!(K::api_version(&()));
    object["kind"] = json!(K::kind(&()));
    serde_json::from_value(object).unwrap_or_else(|error| panic!("not a {}: {error}", K::kind(&())))
}
