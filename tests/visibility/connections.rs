//! What a settled node costs the API server in connections (issue 19): a
//! cold start sends many requests at once over HTTP/1.1 (creates, LocalDisk
//! writes, Events), one connection each; once the burst is over the
//! program holds its five watches and at most
//! `api::client::IDLE_CONNECTIONS_KEPT` idle connections, not every
//! connection the burst opened (kube's default client kept them all, idle,
//! for the life of the process).

use local_pv_provisioner::api::client::IDLE_CONNECTIONS_KEPT;

use crate::clean_offer::wait_available;
use crate::common::*;
use crate::support::world::waits::{WAIT, eventually};

/// The program's watches: the Node, the PV spec ConfigMap, the node's PVs,
/// Pods and LocalDisks.
const WATCHES: usize = 5;

/// Devices of the start: more than the idle connections kept plus the
/// watches, so that a client keeping every connection shows it.
const DEVICES: usize = 16;

/// The TCP connections process `pid` has open to port `port` (the API
/// server): its sockets (`/proc/<pid>/fd` links to `socket:[inode]`) found
/// by inode in the kernel's TCP table, established (`01`) to that port.
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the program's open files")
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let remote = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 9
                && fields[2].ends_with(&remote)
                && fields[3] == "01"
                && inodes.contains(fields[9])
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_burst_only_the_watches_and_a_few_idle_connections_stay_open() {
    let entries: Vec<String> = (0..DEVICES)
        .map(|index| format!("disk{index:02}"))
        .collect();
    let names: Vec<&str> = entries.iter().map(String::as_str).collect();
    let setup = node_with("vis-conns", &names, vec![], |_| {}).await;
    let world = &setup.world;
    for entry in &names {
        wait_available(world, &setup.pv_name(entry)).await;
    }
    eventually("every LocalDisk written", WAIT, || async {
        let written = world
            .server()
            .objects("localdisks.local-pv-provisioner.cybozu.io")
            .iter()
            .filter(|disk| disk["status"]["state"] == "Available")
            .count();
        (written == DEVICES).then_some(())
    })
    .await;
    eventually(
        "the burst's Provisioned Event on the Node",
        WAIT,
        || async {
            (!node_notes(world, "Provisioned", "vis-conns")
                .await
                .is_empty())
            .then_some(())
        },
    )
    .await;

    let pid = setup.process.pid().expect("the program runs");
    let port: u16 = world
        .server()
        .url()
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("the fake API server's port");
    let most = WATCHES + IDLE_CONNECTIONS_KEPT;
    let open = eventually(
        &format!(
            "at most {most} connections to the API server: {WATCHES} watches, {IDLE_CONNECTIONS_KEPT} idle"
        ),
        WAIT,
        || async {
            let open = connections_to(pid, port);
            (open <= most).then_some(open)
        },
    )
    .await;
    assert!(open >= WATCHES, "the watches stay open: {open} connections");
}
