//! A `ValidatingAdmissionPolicy` and its binding, compiled with the `cel`
//! crate and evaluated the way kube-apiserver evaluates them: resource rules,
//! then `matchConditions`, then `variables` (in order, each seeing the ones
//! before it), then every validation with its `message`/`messageExpression`
//! and `reason`; an evaluation error counts as a failure under
//! `failurePolicy: Fail`.
//!
//! The CEL environment is the standard library plus the strings extension
//! (`substring`, `indexOf`, ...), which Kubernetes provides too; nothing is
//! stubbed. Differences from a real API server: expressions are not type
//! checked against the OpenAPI schema, `variables` are evaluated eagerly (a
//! variable whose evaluation fails is left unset, so only a use of it fails,
//! as with Kubernetes' lazy variables), the CEL cost is not metered, and
//! `params`, `namespaceObject` and `authorizer` are not provided.

use std::collections::HashMap;
use std::sync::Arc;

use cel::{Context, Env, Program, Value as Cel, extensions};
use serde_json::{Value, json};

use super::request::Review;

/// A validation that did not pass (or a match condition that failed to
/// evaluate under `failurePolicy: Fail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Index of the validation; `None` for a match condition error.
    pub validation: Option<usize>,
    /// HTTP status the API server answers with (403 for `Forbidden`, 422
    /// for `Invalid`, the default).
    pub code: u16,
    /// The `StatusReason`.
    pub reason: String,
    /// The message as the policy computes it.
    pub message: String,
    /// The evaluation error, when the expression did not evaluate to a bool.
    pub error: Option<String>,
}

/// What the policy decided about one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The request matched the resource rules and every match condition.
    pub matched: bool,
    /// Every validation that failed, in order; the first one is the answer.
    pub failures: Vec<Failure>,
}

impl Outcome {
    /// Whether the request is let through.
    pub fn allowed(&self) -> bool {
        self.failures.is_empty()
    }
}

struct Compiled {
    name: String,
    source: String,
    program: Program,
}

struct Validation {
    expression: Compiled,
    message: Option<String>,
    message_expression: Option<Compiled>,
    reason: String,
}

struct ResourceRule {
    groups: Vec<String>,
    versions: Vec<String>,
    operations: Vec<String>,
    resources: Vec<String>,
}

/// A compiled policy and the name of its binding.
pub struct AdmissionPolicy {
    /// `metadata.name` of the policy.
    pub name: String,
    /// `metadata.name` of the binding.
    pub binding: String,
    fail_closed: bool,
    rules: Vec<ResourceRule>,
    conditions: Vec<Compiled>,
    variables: Vec<Compiled>,
    validations: Vec<Validation>,
    env: Arc<Env>,
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    value[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn text(value: &Value, key: &str) -> Option<String> {
    value[key].as_str().map(String::from)
}

impl AdmissionPolicy {
    /// Compiles a rendered `ValidatingAdmissionPolicy` and checks that the
    /// binding binds it with the `Deny` action (the only one emulated).
    pub fn from_documents(policy: &Value, binding: &Value) -> Result<AdmissionPolicy, String> {
        let name = text(&policy["metadata"], "name").ok_or("the policy has no name")?;
        if binding["spec"]["policyName"] != json!(name)
            || strings(&binding["spec"], "validationActions") != ["Deny"]
        {
            return Err(format!("the binding does not bind {name} with [Deny]"));
        }
        let mut env = Env::stdlib();
        env.add_extension(extensions::strings)
            .map_err(|e| e.to_string())?;
        let env = Arc::new(env);
        let compile = |item: &Value, key: &str| -> Result<Compiled, String> {
            let source = text(item, key).ok_or(format!("no {key} in {item}"))?;
            let program = env.compile(&source).map_err(|e| format!("{source}: {e}"))?;
            let name = text(item, "name").unwrap_or_default();
            Ok(Compiled {
                name,
                source,
                program,
            })
        };
        let spec = &policy["spec"];
        let list = |key: &str| spec[key].as_array().cloned().unwrap_or_default();
        let mut validations = Vec::new();
        for v in list("validations") {
            validations.push(Validation {
                expression: compile(&v, "expression")?,
                message: text(&v, "message"),
                message_expression: v
                    .get("messageExpression")
                    .map(|_| compile(&v, "messageExpression"))
                    .transpose()?,
                reason: text(&v, "reason").unwrap_or_else(|| "Invalid".into()),
            });
        }
        let rules = spec["matchConstraints"]["resourceRules"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| ResourceRule {
                groups: strings(r, "apiGroups"),
                versions: strings(r, "apiVersions"),
                operations: strings(r, "operations"),
                resources: strings(r, "resources"),
            })
            .collect();
        Ok(AdmissionPolicy {
            name,
            binding: text(&binding["metadata"], "name").ok_or("the binding has no name")?,
            fail_closed: spec["failurePolicy"] != "Ignore",
            rules,
            conditions: list("matchConditions")
                .iter()
                .map(|c| compile(c, "expression"))
                .collect::<Result<_, _>>()?,
            variables: list("variables")
                .iter()
                .map(|v| compile(v, "expression"))
                .collect::<Result<_, _>>()?,
            validations,
            env,
        })
    }

    /// How many expressions were compiled: match conditions, variables,
    /// validations and message expressions.
    pub fn expression_count(&self) -> usize {
        self.conditions.len()
            + self.variables.len()
            + self.validations.len()
            + self
                .validations
                .iter()
                .filter(|v| v.message_expression.is_some())
                .count()
    }

    /// Decides about one request.
    pub fn review(&self, review: &Review<'_>) -> Outcome {
        if !self.rules.iter().any(|r| r.matches(review)) {
            return Outcome::default();
        }
        let mut ctx = Context::with_env(self.env.clone());
        let bind = |v: Option<&Value>| cel::to_value(v.unwrap_or(&Value::Null)).expect("JSON");
        ctx.add_variable_from_value("request", bind(Some(&review.request())));
        ctx.add_variable_from_value("object", bind(review.object));
        ctx.add_variable_from_value("oldObject", bind(review.old_object));
        ctx.add_variable_from_value("params", Cel::Null);
        for condition in &self.conditions {
            match condition.program.execute(&ctx) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => return Outcome::default(),
                _ if !self.fail_closed => return Outcome::default(),
                result => {
                    let error = describe_error(&condition.source, &result);
                    let failure = Failure {
                        validation: None,
                        code: 422,
                        reason: "Invalid".into(),
                        message: format!("failed match condition {}: {error}", condition.name),
                        error: Some(error),
                    };
                    return Outcome {
                        matched: true,
                        failures: vec![failure],
                    };
                }
            }
        }
        let mut variables: HashMap<String, Cel> = HashMap::new();
        for variable in &self.variables {
            ctx.add_variable_from_value("variables", variables.clone());
            if let Ok(value) = variable.program.execute(&ctx) {
                variables.insert(variable.name.clone(), value);
            }
        }
        ctx.add_variable_from_value("variables", variables);
        let failures = (self.validations.iter().enumerate())
            .filter_map(|(index, v)| self.validate(index, v, &ctx))
            .collect();
        Outcome {
            matched: true,
            failures,
        }
    }

    fn validate(&self, index: usize, v: &Validation, ctx: &Context<'_, '_>) -> Option<Failure> {
        let result = v.expression.program.execute(ctx);
        if matches!(result, Ok(Cel::Bool(true))) {
            return None;
        }
        if !matches!(result, Ok(Cel::Bool(false))) {
            let error = describe_error(&v.expression.source, &result);
            return self.fail_closed.then(|| Failure {
                validation: Some(index),
                code: 422,
                reason: "Invalid".into(),
                message: error.clone(),
                error: Some(error),
            });
        }
        // Like the API server: a messageExpression that fails, or gives an
        // empty or multi-line string, falls back to message, then to the
        // expression itself.
        let computed = v
            .message_expression
            .as_ref()
            .and_then(|m| match m.program.execute(ctx) {
                Ok(Cel::String(s)) if !s.trim().is_empty() && !s.contains('\n') => {
                    Some(s.to_string())
                }
                _ => None,
            });
        let message = computed
            .or_else(|| v.message.clone())
            .unwrap_or_else(|| format!("failed expression: {}", v.expression.source.trim()));
        Some(Failure {
            validation: Some(index),
            code: reason_code(&v.reason),
            reason: v.reason.clone(),
            message,
            error: None,
        })
    }
}

fn describe_error(source: &str, result: &Result<Cel, cel::ExecutionError>) -> String {
    match result {
        Ok(value) => format!("expression '{source}' resulted in a {value:?}, not a bool"),
        Err(e) => format!("expression '{source}' resulted in error: {e}"),
    }
}

/// The HTTP status of a `StatusReason` a validation may name.
fn reason_code(reason: &str) -> u16 {
    match reason {
        "Unauthorized" => 401,
        "Forbidden" => 403,
        "RequestEntityTooLarge" => 413,
        _ => 422,
    }
}

impl ResourceRule {
    fn matches(&self, r: &Review<'_>) -> bool {
        let any = |list: &[String], value: &str| list.iter().any(|x| x == "*" || x == value);
        let resource = match r.subresource {
            Some(sub) => format!("{}/{sub}", r.resource),
            None => r.resource.to_string(),
        };
        any(&self.groups, r.group)
            && any(&self.versions, r.version)
            && any(&self.operations, r.operation.as_str())
            && any(&self.resources, &resource)
    }
}
