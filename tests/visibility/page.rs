//! The program's live `/metrics` page, parsed: every sample with its name,
//! labels and value, so a test can ask which series of a metric exist (not
//! only what one sample reads), and waits for a set of series to become
//! what a test expects.

use std::collections::BTreeMap;

use crate::support::provisioner::ProvisionerProcess;
use crate::support::world::waits::{WAIT, eventually};

/// One sample line of the text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (a histogram's series end in `_bucket`, `_sum`, `_count`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// Label `key`, `""` when absent.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map(String::as_str).unwrap_or("")
    }
}

/// A parsed page.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The text as served.
    pub text: String,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

/// Labels `{a="x",b="y"}` (without the braces), with `\\`, `\"` and `\n` escapes.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.trim_start_matches(',');
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((index, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, e)| e) {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = index + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_string(), value);
        rest = after[end..].trim_start_matches(',');
    }
    labels
}

/// Parses one page of the text exposition format.
pub fn parse(text: &str) -> Page {
    let samples = text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, parse_labels(labels.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            Sample {
                name: name.to_string(),
                labels,
                value: value.parse().expect("a numeric value"),
            }
        })
        .collect();
    Page {
        text: text.to_string(),
        samples,
    }
}

impl Page {
    /// The samples of `local_pv_provisioner_<name>` carrying every label of `with`.
    pub fn series(&self, name: &str, with: &[(&str, &str)]) -> Vec<&Sample> {
        let full = format!("local_pv_provisioner_{name}");
        self.samples
            .iter()
            .filter(|s| s.name == full && with.iter().all(|(k, v)| s.label(k) == *v))
            .collect()
    }

    /// The value of the one sample of `name` carrying `with`; `None` when there
    /// is none; panics when there are several.
    pub fn value(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        let found = self.series(name, with);
        assert!(found.len() <= 1, "several {name} {with:?}: {found:#?}");
        found.first().map(|s| s.value)
    }
}

/// The process's `/metrics` page now, or `None` while it does not answer.
pub async fn page(process: &ProvisionerProcess) -> Option<Page> {
    match process.get("/metrics").await {
        Some((200, body)) => Some(parse(&body)),
        _ => None,
    }
}

/// Waits until the page holds `check`; returns that page.
pub async fn wait_page(
    process: &ProvisionerProcess,
    what: &str,
    check: impl Fn(&Page) -> bool,
) -> Page {
    eventually(what, WAIT, || async {
        page(process).await.filter(|page| check(page))
    })
    .await
}

/// The label values of `keys` of each series of `name` carrying `with`, sorted.
pub fn rows(page: &Page, name: &str, with: &[(&str, &str)], keys: &[&str]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = page
        .series(name, with)
        .iter()
        .map(|s| keys.iter().map(|k| s.label(k).to_string()).collect())
        .collect();
    rows.sort();
    rows
}

/// Waits until the series of `name` carrying `with`, seen through `keys`,
/// are exactly `wanted`; returns that page.
pub async fn wait_rows(
    process: &ProvisionerProcess,
    name: &str,
    with: &[(&str, &str)],
    keys: &[&str],
    wanted: &[&[&str]],
) -> Page {
    let mut wanted: Vec<Vec<String>> = wanted
        .iter()
        .map(|row| row.iter().map(|v| v.to_string()).collect())
        .collect();
    wanted.sort();
    let what = format!("the series of {name} {with:?} as {keys:?} to be {wanted:?}");
    wait_page(process, &what, |page| {
        rows(page, name, with, keys) == wanted
    })
    .await
}

#[test]
fn a_page_is_parsed_into_samples_with_their_labels() {
    let page = parse(concat!(
        "# HELP local_pv_provisioner_volume_info x\n",
        "# TYPE local_pv_provisioner_volume_info gauge\n",
        "local_pv_provisioner_volume_info{claim_name=\"a\\\"b\",device=\"/d/x,y\",node=\"n\"} 1\n",
        "local_pv_provisioner_reconciles_total{node=\"n\"} 12\n",
        "local_pv_provisioner_wipe_duration_seconds_bucket{node=\"n\",le=\"+Inf\"} 2\n",
    ));
    assert_eq!(page.samples.len(), 3);
    let info = &page.series("volume_info", &[("node", "n")])[0];
    assert_eq!(info.label("claim_name"), "a\"b");
    assert_eq!(info.label("device"), "/d/x,y");
    assert_eq!(page.value("reconciles_total", &[]), Some(12.0));
    let bucket = page.series("wipe_duration_seconds_bucket", &[("le", "+Inf")]);
    assert_eq!(bucket[0].value, 2.0);
}

#[test]
fn the_volume_labels_are_the_ones_the_issue_names() {
    let consumer = local_pv_provisioner::observe::metrics::VOLUME_CONSUMER_LABELS;
    assert_eq!(
        crate::common::INFO_KEYS.join(" "),
        crate::common::INFO_LABELS
    );
    assert_eq!(consumer, crate::common::CONSUMER_KEYS);
}
