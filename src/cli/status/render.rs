//! The `status` report as text: per node a header line, a table of its
//! volumes and a table of its error devices (`-o wide` adds columns), and
//! the units a person reads — capacities like `100Gi`, ages like kubectl's.

use std::fmt::Write as _;

use k8s_openapi::jiff::Timestamp;

use super::model::{ErrorSource, NodeStatus, Report, VolumeStatus};

/// The closing note on error devices read from the disk inventory.
pub const INVENTORY_NOTE: &str = "Error devices: the LocalDisks of each node that are not offered, with their state and reason (kubectl get localdisks -o wide).";
/// The closing note on error devices read from Events (no LocalDisk CRD).
pub const EVENTS_NOTE: &str = "Error devices: the latest of local-pv-provisioner's Events per device on each Node (the LocalDisk CRD is not installed); the API server keeps Events for 1h by default, so older reports are not shown.";
/// The footnote for PVs of the Go upstream.
pub const UPSTREAM_NOTE: &str = "* made by the Go local-pv-provisioner (no node-name annotation)";
/// Spaces between two columns, as kubectl prints them.
const GAP: usize = 3;

/// A duration in kubectl's short form (`45s`, `5m30s`, `3h`, `2d`, `1y20d`).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    let with = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small}{small_unit}")
        }
    };
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    match () {
        _ if seconds < 120 => format!("{seconds}s"),
        _ if minutes < 10 => with(minutes, "m", seconds % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 => with(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 24 * 8 => with(days, "d", hours % 24, "h"),
        _ if days < 365 * 2 => format!("{days}d"),
        _ if days < 365 * 8 => with(days / 365, "y", days % 365, "d"),
        _ => format!("{}y", days / 365),
    }
}

/// How long before `now` the RFC 3339 time `at` was: `-` when unknown,
/// `?` when unreadable.
pub fn age(now: Timestamp, at: Option<&str>) -> String {
    match at.map(str::parse::<Timestamp>) {
        None => "-".to_string(),
        Some(Ok(time)) => human_duration(now.as_second() - time.as_second()),
        Some(Err(_)) => "?".to_string(),
    }
}

/// `rows` as columns separated by [`GAP`] spaces, every line indented by
/// `indent`, trailing spaces trimmed.
fn columns(out: &mut String, rows: &[Vec<String>]) {
    let count = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..count)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}", width = width + GAP);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn or_dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_string()
}

fn volume_row(volume: &VolumeStatus, now: Timestamp, wide: bool) -> Vec<String> {
    let capacity = match (volume.capacity_bytes, &volume.capacity) {
        (Some(bytes), _) => crate::objects::quantity::human(bytes),
        (None, capacity) => or_dash(capacity.as_deref()),
    };
    let progress = volume.wipe_progress.as_deref().and_then(|progress| {
        let (done, total) = progress.split_once('/')?;
        let (done, total) = (done.parse::<f64>().ok()?, total.parse::<f64>().ok()?);
        (total > 0.0).then(|| format!(" (wiped {:.0}%)", 100.0 * done / total))
    });
    let phase = if volume.deletion_timestamp.is_some() {
        format!("Terminating{}", progress.unwrap_or_default())
    } else if volume.kept {
        "Released (kept)".to_string()
    } else {
        or_dash(volume.phase.as_deref())
    };
    // Pods share their claim's namespace: the name says enough.
    let pods: Vec<&str> = volume
        .pods
        .iter()
        .map(|pod| pod.split_once('/').map_or(pod.as_str(), |(_, name)| name))
        .collect();
    let pods = (!pods.is_empty()).then(|| pods.join(","));
    let history = &volume.history;
    let mut row = vec![
        or_dash(volume.device.as_deref()),
        volume.class.clone(),
        format!("{}{}", volume.pv, if volume.upstream { "*" } else { "" }),
        capacity,
        phase,
        or_dash(volume.claim.as_deref()),
        or_dash(pods.as_deref()),
        age(now, volume.created_at.as_deref()),
        age(now, history.last_wipe.as_ref().map(|wipe| wipe.at.as_str())),
        history.wipes.to_string(),
    ];
    if wide {
        let claims: Vec<&str> = history.claims.iter().map(|c| c.claim.as_str()).collect();
        let claims = (!claims.is_empty()).then(|| claims.join(","));
        row.extend([
            or_dash(volume.storage_class.as_deref()),
            or_dash(volume.volume_mode.as_deref()),
            or_dash(volume.device_number.as_deref()),
            or_dash(volume.stable_id.as_deref()),
            or_dash(claims.as_deref()),
        ]);
    }
    row
}

fn header(node: &NodeStatus, now: Timestamp) -> String {
    let mut line = format!("NODE {}", node.name);
    if !node.node_found {
        line.push_str(" (no Node object)");
    }
    match &node.pv_spec_config_map {
        Some(name) => {
            let _ = write!(line, "   PV spec ConfigMap: {name}");
        }
        None => line.push_str("   PV spec ConfigMap: (no annotation)"),
    }
    if let Some(count) = &node.device_count {
        let number = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
        let _ = write!(
            line,
            "   devices: {} usable, {} without a PV ({} ago)",
            number(count.usable),
            number(count.without_pv),
            age(now, count.at.as_deref())
        );
    }
    line
}

fn node_text(out: &mut String, node: &NodeStatus, now: Timestamp, wide: bool, from: ErrorSource) {
    out.push_str(&header(node, now));
    out.push('\n');
    if let Some(spec) = node
        .spec
        .as_ref()
        .filter(|s| s.reason != crate::objects::reasons::PV_SPEC_APPLIED)
    {
        let _ = writeln!(
            out,
            "{} ({} ago): {}",
            spec.reason,
            age(now, spec.at.as_deref()),
            spec.message
        );
    }
    if node.volumes.is_empty() {
        out.push_str("No PersistentVolumes.\n");
    } else {
        let mut head: Vec<String> = [
            "DEVICE", "CLASS", "PV", "CAPACITY", "PHASE", "CLAIM", "PODS",
        ]
        .into_iter()
        .chain(["AGE", "LAST-WIPE", "WIPES"])
        .map(str::to_string)
        .collect();
        if wide {
            head.extend(
                [
                    "STORAGECLASS",
                    "VOLUMEMODE",
                    "DEVICE-NUMBER",
                    "STABLE-ID",
                    "CLAIM-HISTORY",
                ]
                .map(str::to_string),
            );
        }
        let mut rows = vec![head];
        rows.extend(node.volumes.iter().map(|v| volume_row(v, now, wide)));
        columns(out, &rows);
    }
    error_devices(out, node, now, from);
}

fn error_devices(out: &mut String, node: &NodeStatus, now: Timestamp, from: ErrorSource) {
    if node.error_devices.is_empty() {
        out.push_str("No error devices reported.\n");
    } else {
        let mut rows = vec![
            ["ERROR-DEVICE", "REASON", "AGE", "MESSAGE"]
                .map(str::to_string)
                .to_vec(),
        ];
        rows.extend(node.error_devices.iter().map(|device| {
            vec![
                device.device.clone(),
                device.reason.clone(),
                age(now, device.at.as_deref()),
                device.message.clone(),
            ]
        }));
        columns(out, &rows);
    }
    let counted = node
        .device_count
        .as_ref()
        .and_then(|count| count.without_pv);
    // LocalDisks stand as long as the disk does; only Events expire.
    let expired =
        counted.filter(|&n| from == ErrorSource::Events && n > node.error_devices.len() as u64);
    if let Some(counted) = expired {
        let _ = writeln!(
            out,
            "{counted} device(s) without a PV were counted, {} listed: the Events of the others have expired (see the controller's log or local_pv_provisioner_error_devices).",
            node.error_devices.len()
        );
    }
}

/// The report as tables (`wide`: with the extra columns).
pub fn text(report: &Report, now: Timestamp, wide: bool) -> String {
    let mut out = String::new();
    if report.nodes.is_empty() {
        out.push_str("No node has PersistentVolumes or Events of local-pv-provisioner.\n");
    }
    for (index, node) in report.nodes.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        node_text(&mut out, node, now, wide, report.error_devices_from);
    }
    out.push('\n');
    let upstream = report
        .nodes
        .iter()
        .flat_map(|node| &node.volumes)
        .any(|volume| volume.upstream);
    if upstream {
        out.push_str(UPSTREAM_NOTE);
        out.push('\n');
    }
    out.push_str(match report.error_devices_from {
        ErrorSource::LocalDisks => INVENTORY_NOTE,
        ErrorSource::Events => EVENTS_NOTE,
    });
    out.push('\n');
    out
}
