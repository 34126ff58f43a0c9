//! PATCH bodies: JSON merge patch (RFC 7386), strategic merge patch (handled
//! as a merge patch, see [`apply`]) and JSON patch (RFC 6902).

use serde_json::{Map, Value};

use super::resources::ApiError;

/// Applies a patch body of the given content type to `target`.
///
/// Simplification: `application/strategic-merge-patch+json` is applied as a
/// plain merge patch, so lists are replaced instead of merged by key (the real
/// server merges e.g. `finalizers`, `conditions` and containers by key), and
/// `$patch`/`$setElementOrder`/... directives are refused with 400 instead of
/// being misapplied. Server-side apply (`application/apply-patch+yaml`) and
/// other types get 415.
pub(super) fn apply(content_type: &str, target: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    let kind = match media {
        "application/merge-patch+json" => Kind::Merge,
        "application/strategic-merge-patch+json" => Kind::Strategic,
        "application/json-patch+json" => Kind::Json,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut doc = target.clone();
    match kind {
        Kind::Merge => merge(&mut doc, &patch),
        Kind::Strategic => {
            if let Some(directive) = find_directive(&patch) {
                return Err(ApiError::bad_request(format!(
                    "fake API server: strategic merge patch directive {directive:?} is not supported"
                )));
            }
            merge(&mut doc, &patch);
        }
        Kind::Json => {
            let ops = patch.as_array().ok_or_else(|| {
                ApiError::bad_request("json patch must be an array of operations")
            })?;
            for op in ops {
                json_patch_op(&mut doc, op).map_err(|e| ApiError {
                    code: 422,
                    reason: "Invalid",
                    message: format!(
                        "the server rejected our request due to an error in our request: {e}"
                    ),
                    details: Value::Object(Map::new()),
                })?;
            }
        }
    }
    Ok(doc)
}

enum Kind {
    Merge,
    Strategic,
    Json,
}

/// RFC 7386 merge.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn find_directive(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) => m.iter().find_map(|(k, v)| {
            if k.starts_with('$') {
                Some(k.clone())
            } else {
                find_directive(v)
            }
        }),
        Value::Array(a) => a.iter().find_map(find_directive),
        _ => None,
    }
}

fn tokens(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {pointer:?}"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if allow_end && token == "-" {
        return Ok(len);
    }
    let i: usize = token
        .parse()
        .map_err(|_| format!("invalid array index {token:?}"))?;
    if i > len || (!allow_end && i == len) {
        return Err(format!("array index {i} out of bounds"));
    }
    Ok(i)
}

fn parent<'a>(doc: &'a mut Value, toks: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(t)
                .ok_or_else(|| format!("missing path element {t:?}"))?,
            Value::Array(a) => {
                let i = index(t, a.len(), false)?;
                &mut a[i]
            }
            _ => return Err(format!("cannot descend into a scalar at {t:?}")),
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let toks = tokens(path)?;
    let Some((last, init)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, init)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let i = index(last, a.len(), true)?;
            a.insert(i, value);
        }
        _ => return Err(format!("cannot add at {path:?}")),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let toks = tokens(path)?;
    let (last, init) = toks
        .split_last()
        .ok_or("cannot remove the whole document")?;
    match parent(doc, init)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("missing path {path:?}")),
        Value::Array(a) => {
            let i = index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(format!("cannot remove at {path:?}")),
    }
}

fn get(doc: &Value, path: &str) -> Result<Value, String> {
    doc.pointer(path)
        .cloned()
        .ok_or_else(|| format!("missing path {path:?}"))
}

fn json_patch_op(doc: &mut Value, op: &Value) -> Result<(), String> {
    let field = |name: &str| {
        op.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("operation {op} lacks {name:?}"))
    };
    let value = || {
        op.get("value")
            .cloned()
            .ok_or_else(|| format!("operation {op} lacks \"value\""))
    };
    let path = field("path")?;
    match field("op")? {
        "add" => add(doc, path, value()?),
        "remove" => remove(doc, path).map(drop),
        "replace" => {
            remove(doc, path).or_else(|e| {
                if path.is_empty() {
                    Ok(Value::Null)
                } else {
                    Err(e)
                }
            })?;
            add(doc, path, value()?)
        }
        "move" => {
            let v = remove(doc, field("from")?)?;
            add(doc, path, v)
        }
        "copy" => {
            let v = get(doc, field("from")?)?;
            add(doc, path, v)
        }
        "test" => {
            if get(doc, path)? == value()? {
                Ok(())
            } else {
                Err(format!("testing value {path} failed"))
            }
        }
        other => Err(format!("unknown json patch operation {other:?}")),
    }
}
