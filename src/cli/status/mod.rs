//! The `status` subcommand (also `kubectl local-pv`): reads the cluster
//! through the usual kubeconfig and prints, per node, this program's
//! PersistentVolumes — device, PV, capacity, phase, claim, the pods using
//! it on that node, age, last wipe and wipe count from the device history —
//! and the error devices the controller reported. Read-only: it needs
//! `list` on nodes, persistentvolumes, pods and `events.k8s.io` events, and
//! gives the controller no new permission.
//!
//! Error devices come from the controller's Events on the Node (see
//! [`node_events`]) rather than from a status the controller would publish:
//! that would need a new write permission on every node, while the Events
//! are already there. Their limit: the API server keeps Events for an hour
//! by default, and the controller speaks once per change, so a device
//! reported earlier and unchanged since is not listed (the last
//! `DevicesDiscovered` count says how many there were).
//!
//! - `read`: the client and the four lists, and the one-line errors;
//! - `model`: the report (the `-o json` document);
//! - `node_events`: what the Node Events say;
//! - `render`: the tables.

pub mod model;
pub mod node_events;
pub mod read;
pub mod render;

#[cfg(test)]
mod tests;

use k8s_openapi::jiff::Timestamp;

use crate::config::{StatusArgs, StatusOutput};

/// Reads the cluster and returns the report to print, or a one-line error.
pub fn run_status(args: &StatusArgs) -> Result<String, String> {
    let now = match &args.now {
        Some(text) => text
            .parse::<Timestamp>()
            .map_err(|error| format!("invalid --now {text:?}: {error}"))?,
        None => Timestamp::now(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the async runtime: {error}"))?;
    let state = runtime.block_on(async {
        let (client, url) = read::client(args).await?;
        read::read_cluster(&client, &url, args.node.as_deref()).await
    })?;
    let report = model::build_report(&state, args.node.as_deref())?;
    Ok(match args.output {
        StatusOutput::Table => render::text(&report, now, false),
        StatusOutput::Wide => render::text(&report, now, true),
        StatusOutput::Json => {
            let mut json = serde_json::to_string_pretty(&report)
                .map_err(|error| format!("cannot render JSON: {error}"))?;
            json.push('\n');
            json
        }
    })
}
