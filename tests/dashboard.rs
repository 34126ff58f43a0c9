//! The Grafana dashboard in the chart
//! (`charts/local-pv-provisioner/dashboards/local-pv-provisioner.json`)
//! names only metrics the program exports: every PromQL expression of every
//! panel and variable is reduced to the metric names it selects (functions,
//! aggregation clauses, label matchers, ranges, strings and numbers
//! stripped), a histogram's `_bucket`, `_sum` and `_count` series count as
//! the histogram, and each name must be in
//! `local_pv_provisioner::observe::metrics::Metrics::names()`. The extractor is
//! tested on its own, so that a name it cannot see does not pass unseen.
//! Every expression also parses as PromQL (`promtool check rules`, from
//! Debian's `prometheus` package), and the PromQL of the README's "Who uses
//! my disks?" names only exported metrics too. Whether the JSON is a
//! well-formed dashboard shipped by the chart is `.ci/check_deploy.py`'s
//! part.

use std::collections::{BTreeMap, BTreeSet};

use local_pv_provisioner::observe::metrics::Metrics;
use regex::Regex;
use serde_json::Value;

#[path = "visibility/promtool_run.rs"]
mod promtool_run;

#[path = "support/promql.rs"]
mod promql;

use promql::{HISTOGRAM_SUFFIXES, expressions, metric_names};

/// The dashboard, from the repository root.
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/local-pv-provisioner/dashboards/local-pv-provisioner.json"
);

/// The README, whose "Who uses my disks?" section holds PromQL.
const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");

/// The program's metrics: name → whether it is a histogram.
fn exported() -> BTreeMap<String, bool> {
    let metrics = Metrics::new("x");
    let text = metrics.render();
    metrics
        .names()
        .into_iter()
        .map(|name| {
            let histogram = text.contains(&format!("# TYPE {name} histogram\n"));
            (name, histogram)
        })
        .collect()
}

/// Whether `name` is an exported metric or a series of an exported histogram.
fn is_exported(name: &str, metrics: &BTreeMap<String, bool>) -> bool {
    if metrics.contains_key(name) {
        return true;
    }
    HISTOGRAM_SUFFIXES.iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|base| metrics.get(base) == Some(&true))
    })
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let dashboard = dashboard();
    let metrics = exported();
    let expressions = expressions(&dashboard);
    assert!(expressions.len() >= 15, "{expressions:#?}");
    let mut used = BTreeSet::new();
    let mut unknown = Vec::new();
    for (place, expr) in &expressions {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr:?}");
        for name in names {
            if !is_exported(&name, &metrics) {
                unknown.push(format!("{place}: {name} (in {expr:?})"));
            }
            used.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the program does not export:\n{}",
        unknown.join("\n")
    );
    // The panels of the issue's item 5 rest on these.
    for wanted in [
        "local_pv_provisioner_available_devices",
        "local_pv_provisioner_error_devices",
        "local_pv_provisioner_missing_devices",
        "local_pv_provisioner_volume_info",
        "local_pv_provisioner_volume_consumer_info",
        "local_pv_provisioner_wipe_duration_seconds_bucket",
        "local_pv_provisioner_pv_create_duration_seconds_bucket",
        "local_pv_provisioner_wipe_failures_total",
    ] {
        assert!(used.contains(wanted), "no panel queries {wanted}: {used:?}");
    }
}

#[test]
fn the_extractor_sees_every_series_and_nothing_else() {
    let names = |expr: &str| -> Vec<String> { metric_names(expr).into_iter().collect() };
    assert_eq!(
        names(
            r#"histogram_quantile(0.9, sum by (le) (rate(a_seconds_bucket{node=~"$node", x="by (y)"}[$__rate_interval])))"#
        ),
        ["a_seconds_bucket"]
    );
    assert_eq!(
        names(r#"sum by (phase) (b_bytes{n="1"} * on (node, pv) group_left (phase) c_info) > 1e3"#),
        ["b_bytes", "c_info"]
    );
    assert_eq!(
        names(r#"label_replace(d_info, "pod", "$1", "exported_pod", "(.+)") or e_total offset 5m"#),
        ["d_info", "e_total"]
    );
    assert_eq!(
        names("count(f_total unless ignoring (reason) g_total) without (node)"),
        ["f_total", "g_total"]
    );
}

#[test]
fn a_name_the_program_does_not_export_is_caught() {
    let metrics = exported();
    assert!(is_exported(
        "local_pv_provisioner_wipe_duration_seconds_count",
        &metrics
    ));
    assert!(is_exported("local_pv_provisioner_wipes_total", &metrics));
    assert!(
        !is_exported("local_pv_provisioner_wipes_total_count", &metrics),
        "only a histogram has _count series"
    );
    assert!(!is_exported("local_pv_provisioner_wipes", &metrics));
    assert!(!is_exported(
        "local_pv_provisioner_volume_info_bucket",
        &metrics
    ));
    let dashboard = serde_json::json!({
        "panels": [{"title": "t", "targets": [{"expr": "sum(rate(local_pv_provisioner_wipe_total[5m])) / 1e3"}]}],
        "templating": {"list": [{"type": "query", "name": "node",
                                  "query": {"query": "label_values(local_pv_provisioner_nodes, node)"}}]},
    });
    let found: Vec<String> = expressions(&dashboard)
        .iter()
        .flat_map(|(_, expr)| metric_names(expr))
        .filter(|name| !is_exported(name, &metrics))
        .collect();
    assert_eq!(
        found,
        [
            "local_pv_provisioner_wipe_total",
            "local_pv_provisioner_nodes"
        ]
    );
}

/// The dashboard, parsed.
fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).expect("the dashboard file");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

#[test]
fn every_dashboard_query_parses_as_promql() {
    let rules: Vec<Value> = expressions(&dashboard())
        .into_iter()
        .enumerate()
        .map(|(index, (place, expr))| {
            // Grafana's variables, as Grafana would fill them in.
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$node", ".*");
            serde_json::json!({"record": format!("dashboard:query{index}"), "expr": expr,
                               "labels": {"place": place}})
        })
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("dashboard-rules.json");
    std::fs::write(&path, file.to_string()).expect("write the rules");
    let output = promtool_run::promtool(&["check", "rules", path.to_str().unwrap()], "");
    assert!(
        output.status.success(),
        "a dashboard query is not valid PromQL:\n{}",
        promtool_run::said(&output)
    );
}

#[test]
fn every_metric_the_readme_queries_is_exported() {
    let readme = std::fs::read_to_string(README).expect("README.md");
    let start = readme.find("## Who uses my disks?").expect("the section");
    let section = &readme[start..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];
    let blocks = Regex::new(r"(?s)```promql\n(.*?)```").unwrap();
    let metrics = exported();
    let mut names = BTreeSet::new();
    for block in blocks.captures_iter(section) {
        let code: Vec<&str> = block[1]
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .map(|line| line.split("  #").next().unwrap_or(line))
            .collect();
        names.extend(metric_names(&code.join("\n")));
    }
    assert!(names.len() >= 8, "the section queries metrics: {names:?}");
    let unknown: Vec<&String> = names.iter().filter(|n| !is_exported(n, &metrics)).collect();
    assert!(
        unknown.is_empty(),
        "README queries metrics the program does not export: {unknown:?}"
    );
}

/// The alert rules shipped for kustomize (the chart's are checked equal to
/// them by `.ci/check_deploy.py`).
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/prometheus/prometheus_rule.yaml"
);

#[test]
fn every_metric_the_alert_rules_query_is_exported() {
    let text = std::fs::read_to_string(RULES).expect("the rules file");
    let rule: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let expressions = promql::rule_expressions(&rule["spec"]);
    assert!(expressions.len() >= 10, "the rules: {expressions:?}");
    let mut metrics = exported();
    let node_cleanup = local_pv_provisioner::controller::node_cleanup::NodeCleanupMetrics::new();
    for line in node_cleanup.render().lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.split(' ').next())
        {
            metrics.insert(name.to_string(), false);
        }
    }
    // Not the program's: the rules' own recording rule and kube-state-metrics.
    let others = ["node:local_pv_provisioner_volumes:count", "kube_node_info"];
    let mut unknown = Vec::new();
    for (rule, expr) in expressions {
        for name in metric_names(&expr) {
            if !is_exported(&name, &metrics) && !others.contains(&name.as_str()) {
                unknown.push(format!("{rule}: {name}"));
            }
        }
    }
    assert!(unknown.is_empty(), "not exported: {unknown:?}");
}
