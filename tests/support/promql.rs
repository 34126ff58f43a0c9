//! Reading PromQL for the checks of what the dashboard and the alert rules
//! query: the metric names an expression selects (functions, aggregation
//! clauses, label matchers, ranges, strings and numbers stripped), every
//! expression of the Grafana dashboard, and every expression of a
//! Prometheus rules file.

use std::collections::BTreeSet;

use regex::Regex;
use serde_json::Value;

/// Keywords whose parenthesised list holds label names, not series.
pub const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other words of PromQL that are not metric names: set operators, `bool`
/// and `offset`.
pub const OTHER_KEYWORDS: &[&str] = &["bool", "and", "or", "unless", "offset"];

/// Suffixes of a histogram's series.
pub const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

/// Removes everything between `open` and its matching `close` (not nested:
/// label matchers and ranges do not nest).
pub fn strip_between(text: &str, open: char, close: char) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        match c {
            c if c == open && !inside => inside = true,
            c if c == close && inside => {
                inside = false;
                out.push(' ');
            }
            c if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

/// The metric names one PromQL expression selects.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let strings = Regex::new(r#""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`"#).unwrap();
    let text = strings.replace_all(expr, " ").into_owned();
    let text = strip_between(&strip_between(&text, '{', '}'), '[', ']');
    let label_list = Regex::new(&format!(r"\b({})\s*\([^)]*\)", LABEL_LISTS.join("|"))).unwrap();
    let text = label_list.replace_all(&text, " ").into_owned();
    // Numbers and durations (`0.9`, `1e3`, `5m`) are one token each, so
    // no part of them passes for a name.
    let token =
        Regex::new(r"[0-9][0-9A-Za-z_.]*(?:[eE][+-][0-9]+)?|[A-Za-z_:][A-Za-z0-9_:]*(?:\s*\()?")
            .unwrap();
    token
        .find_iter(&text)
        .map(|m| m.as_str())
        .filter(|t| !t.starts_with(|c: char| c.is_ascii_digit()))
        .filter(|t| !t.ends_with('('))
        .filter(|t| !LABEL_LISTS.contains(t) && !OTHER_KEYWORDS.contains(t))
        .map(str::to_string)
        .collect()
}

/// Every PromQL expression of the dashboard, with where it is: the panels'
/// targets (also of rows' panels) and the query variables.
pub fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut panels: Vec<&Value> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| {
                panic!("panel {title:?}: a target without a PromQL expr: {target}")
            });
            found.push((format!("panel {title:?}"), expr.to_string()));
        }
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    // label_values(metric, label): the label is not a series.
    let label_values =
        Regex::new(r"^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$").unwrap();
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        let name = variable["name"].as_str().unwrap_or("?");
        let query = match &variable["query"] {
            Value::String(query) => query.clone(),
            query => query["query"].as_str().expect("a query").to_string(),
        };
        let expr = match label_values.captures(&query) {
            Some(captures) => captures[1].to_string(),
            None => query,
        };
        found.push((format!("variable ${name}"), expr));
    }
    found
}

/// Every expression of a Prometheus rules file (`groups[].rules[].expr`),
/// with the rule's name (`alert` or `record`).
pub fn rule_expressions(rules: &serde_yaml_ng::Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for group in rules["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            let name = rule["alert"]
                .as_str()
                .or_else(|| rule["record"].as_str())
                .unwrap_or("?");
            if let Some(expr) = rule["expr"].as_str() {
                found.push((format!("rule {name}"), expr.to_string()));
            }
        }
    }
    found
}
