//! Authentication by bearer token and admission by a `ValidatingAdmissionPolicy`
//! in the fake API server, both opt-in.
//!
//! A test registers tokens ([`FakeApiServer::add_token`]); a request that
//! sends one of them runs as its [`UserInfo`], a request that sends an
//! unknown token is refused with 401, and a request without a token runs as
//! no one in particular (as every request did before tokens existed), which
//! no policy matches. [`FakeApiServer::enforce_node_policy`] loads the node
//! restriction and node-cleanup's restriction from `config/policy` (the
//! chart renders the same, proved by `tests/admission_policy.rs`) and
//! evaluates them on every create, update, patch and delete they match,
//! before the store is touched (each policy that matches decides; the first
//! denial is the answer); a denial is
//! answered like kube-apiserver answers it (403 `Forbidden` with
//! `ValidatingAdmissionPolicy '…' with binding '…' denied request: …`) and
//! listed by [`FakeApiServer::admission_denials`] (every matched request, with
//! its decision, by [`FakeApiServer::admission_decisions`]).
//!
//! ```ignore
//! server.enforce_node_policy();
//! let token = server.provisioner_token("node-a");
//! let kubeconfig = server.write_kubeconfig_with_token(dir, &token);
//! // ... run the provisioner with that kubeconfig ...
//! assert!(server.admission_denials().is_empty());
//! ```

mod policy;
mod request;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

#[allow(unused_imports)] // re-exported by `fake_api` for the test files
pub use policy::{AdmissionPolicy, Failure, Outcome};
pub use request::{Operation, Review, UserInfo};

use super::resources::{ApiError, RESOURCES};
use super::{FakeApiServer, Shared};

/// Namespace and name of the provisioner's ServiceAccount in `config/rbac`,
/// the user the policy in `config/policy` restricts.
pub const PROVISIONER_SERVICE_ACCOUNT: (&str, &str) =
    ("local-pv-provisioner", "local-pv-provisioner");

/// Namespace and name of node-cleanup's ServiceAccount in
/// `config/node-cleanup`, the user node-cleanup's restriction in
/// `config/policy` restricts.
pub const NODE_CLEANUP_SERVICE_ACCOUNT: (&str, &str) =
    ("local-pv-provisioner", "local-pv-provisioner-node-cleanup");

/// A request the policy matched, and what it decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionDecision {
    /// Whether the policy let it through.
    pub allowed: bool,
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub operation: String,
    /// Resource plural.
    pub resource: String,
    /// Object name.
    pub name: String,
    /// Who asked.
    pub username: String,
    /// HTTP status of the denial (`0` when allowed).
    pub code: u16,
    /// The policy's message (without the API server's prefix); empty when
    /// allowed.
    pub message: String,
}

/// Tokens, the policy and what it decided; part of the server's shared state.
#[derive(Default)]
pub(super) struct Admission {
    tokens: Mutex<HashMap<String, UserInfo>>,
    /// The policies, each with whether a denial refuses the request
    /// (`false`: only listed, as with the `Audit` action).
    policy: Mutex<Vec<(Arc<AdmissionPolicy>, bool)>>,
    decisions: Mutex<Vec<AdmissionDecision>>,
}

/// Reads `config/policy` (the node restriction and its binding) and compiles it.
pub fn node_policy_from_config() -> AdmissionPolicy {
    policy_from_config(
        "validating_admission_policy.yaml",
        "validating_admission_policy_binding.yaml",
    )
}

/// Reads `config/policy` (node-cleanup's restriction and its binding) and
/// compiles it.
pub fn node_cleanup_policy_from_config() -> AdmissionPolicy {
    policy_from_config(
        "node_cleanup_admission_policy.yaml",
        "node_cleanup_admission_policy_binding.yaml",
    )
}

/// One policy and its binding of `config/policy`, compiled.
fn policy_from_config(policy: &str, binding: &str) -> AdmissionPolicy {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy");
    let read = |file: &str| -> Value {
        let path = dir.join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    AdmissionPolicy::from_documents(&read(policy), &read(binding))
        .unwrap_or_else(|e| panic!("config/policy/{policy}: {e}"))
}

/// The user of a request: `Ok(None)` without a bearer token, 401 for a
/// token no test registered.
pub(super) fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
) -> Result<Option<UserInfo>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer "));
    let tokens = shared.admission.tokens.lock().expect("tokens");
    match token.and_then(|t| tokens.get(t.trim())) {
        Some(user) => Ok(Some(user.clone())),
        None => Err(ApiError {
            code: 401,
            reason: "Unauthorized",
            message: "Unauthorized".into(),
            details: json!({}),
        }),
    }
}

/// Runs the policy, if one is set, on a write to resource `res`; `Err` is
/// the answer to send instead of serving the request.
pub(super) fn admit(
    shared: &Shared,
    user: Option<&UserInfo>,
    res: usize,
    subresource: Option<&str>,
    object: Option<&Value>,
    old_object: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(user) = user else { return Ok(()) };
    let policies = shared.admission.policy.lock().expect("policy").clone();
    for (policy, enforce) in policies {
        admit_one(
            shared,
            &policy,
            enforce,
            user,
            res,
            subresource,
            object,
            old_object,
        )?;
    }
    Ok(())
}

/// Runs one policy on a write (see [`admit`]).
#[allow(clippy::too_many_arguments)]
fn admit_one(
    shared: &Shared,
    policy: &AdmissionPolicy,
    enforce: bool,
    user: &UserInfo,
    res: usize,
    subresource: Option<&str>,
    object: Option<&Value>,
    old_object: Option<&Value>,
) -> Result<(), ApiError> {
    let operation = match (object, old_object) {
        (Some(_), None) => Operation::Create,
        (Some(_), Some(_)) => Operation::Update,
        (None, _) => Operation::Delete,
    };
    let def = &RESOURCES[res];
    let mut review = Review::persistent_volume(operation, user, object, old_object);
    (review.group, review.version, review.resource) = (def.group, def.version, def.plural);
    (review.kind, review.subresource) = (def.kind, subresource);
    let outcome = policy.review(&review);
    if !outcome.matched {
        return Ok(());
    }
    let failure = outcome.failures.first();
    shared
        .admission
        .decisions
        .lock()
        .expect("decisions")
        .push(AdmissionDecision {
            allowed: failure.is_none(),
            operation: operation.as_str().into(),
            resource: def.plural.into(),
            name: review.name.into(),
            username: user.username.clone(),
            code: failure.map_or(0, |f| f.code),
            message: failure.map(|f| f.message.clone()).unwrap_or_default(),
        });
    let Some(failure) = failure.filter(|_| enforce) else {
        return Ok(());
    };
    let message = format!(
        "{} \"{}\" is forbidden: ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {}",
        def.plural, review.name, policy.name, policy.binding, failure.message
    );
    Err(ApiError {
        code: failure.code,
        reason: if failure.code == 403 {
            "Forbidden"
        } else {
            "Invalid"
        },
        details: json!({"name": review.name, "kind": def.plural, "causes": [{"message": message}]}),
        message,
    })
}

impl FakeApiServer {
    /// Registers a bearer token: requests that send it run as `user`.
    pub fn add_token(&self, token: &str, user: UserInfo) {
        let mut tokens = self.shared.admission.tokens.lock().expect("tokens");
        tokens.insert(token.to_string(), user);
    }

    /// Registers (once per node) and returns a token of the provisioner's
    /// ServiceAccount ([`PROVISIONER_SERVICE_ACCOUNT`]) bound to a pod on
    /// `node`, as a DaemonSet pod there would have.
    pub fn provisioner_token(&self, node: &str) -> String {
        let (namespace, name) = PROVISIONER_SERVICE_ACCOUNT;
        let token = format!("provisioner-on-{node}");
        self.add_token(
            &token,
            UserInfo::service_account(namespace, name).on_node(node),
        );
        token
    }

    /// Evaluates `policy` on every write it matches and refuses the denied
    /// ones (`enforce`), or only lists them (`!enforce`, like the `Audit`
    /// action). Replaces earlier policies; survives restarts.
    pub fn set_admission_policy(&self, policy: AdmissionPolicy, enforce: bool) {
        *self.shared.admission.policy.lock().expect("policy") = vec![(Arc::new(policy), enforce)];
    }

    /// Evaluates `policy` too, besides the policies set before.
    pub fn add_admission_policy(&self, policy: AdmissionPolicy, enforce: bool) {
        let mut policies = self.shared.admission.policy.lock().expect("policy");
        policies.push((Arc::new(policy), enforce));
    }

    /// Enforces the node restriction and node-cleanup's restriction of
    /// `config/policy` (see the module doc).
    pub fn enforce_node_policy(&self) {
        self.set_admission_policy(node_policy_from_config(), true);
        self.add_admission_policy(node_cleanup_policy_from_config(), true);
    }

    /// Registers (once) and returns a token of node-cleanup's ServiceAccount
    /// ([`NODE_CLEANUP_SERVICE_ACCOUNT`]) bound to a pod on `node` (a
    /// Deployment's pod runs on some node too).
    pub fn node_cleanup_token(&self, node: &str) -> String {
        let (namespace, name) = NODE_CLEANUP_SERVICE_ACCOUNT;
        let token = format!("node-cleanup-on-{node}");
        self.add_token(
            &token,
            UserInfo::service_account(namespace, name).on_node(node),
        );
        token
    }

    /// Every request the policy matched so far, with its decision, oldest
    /// first.
    pub fn admission_decisions(&self) -> Vec<AdmissionDecision> {
        self.shared
            .admission
            .decisions
            .lock()
            .expect("decisions")
            .clone()
    }

    /// The requests the policy denied so far (also those it only listed).
    pub fn admission_denials(&self) -> Vec<AdmissionDecision> {
        let decisions = self.admission_decisions();
        decisions.into_iter().filter(|d| !d.allowed).collect()
    }

    /// Kubeconfig YAML like [`Self::kubeconfig_yaml`] whose user sends `token`.
    pub fn kubeconfig_yaml_with_token(&self, token: &str) -> String {
        let quoted = serde_json::to_string(token).expect("a JSON string");
        self.kubeconfig_for_user(&format!("{{token: {quoted}}}"))
    }

    /// Writes [`Self::kubeconfig_yaml_with_token`] to `dir/kubeconfig-<hash
    /// of the token>` (a token may be longer than a file name) and returns
    /// the path.
    pub fn write_kubeconfig_with_token(&self, dir: &Path, token: &str) -> PathBuf {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(token, &mut hasher);
        let hash = std::hash::Hasher::finish(&hasher);
        let path = dir.join(format!("kubeconfig-{hash:016x}"));
        std::fs::write(&path, self.kubeconfig_yaml_with_token(token)).expect("write kubeconfig");
        path
    }

    /// A kube client that sends `token`.
    pub async fn client_with_token(&self, token: &str) -> kube::Client {
        self.client_from(&self.kubeconfig_yaml_with_token(token))
            .await
    }
}
