//! Command-line configuration: the flags, their `LP_*` environment
//! variables, and the parsers for Go-style durations and listen addresses,
//! so the flags of the Go local-pv-provisioner keep working unchanged. A
//! shared leaf of the crate root.
//!
//! Uses: device.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::device::wipe::ZeroMethod;

/// The whole command line: the controller's flags, or a subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "local-pv-provisioner",
    version,
    about = "Turns this node's local block devices into PersistentVolumes and wipes them when released",
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// A subcommand; without one the controller runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The controller's flags.
    #[command(flatten)]
    pub controller: ControllerArgs,
}

/// Subcommands besides running the controller.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dry run: scan this machine's devices against a PV spec and print the
    /// PersistentVolumes that would be created, without a cluster.
    Scan(ScanArgs),
    /// Show each node's PersistentVolumes and error devices from the
    /// cluster (also `kubectl local-pv`).
    ///
    /// Per node: device, PV, capacity, phase, claim, pods, age, last wipe
    /// and wipe count, then the error devices from the controller's Events.
    /// Read-only, through the usual kubeconfig. Run as an executable named
    /// `kubectl-local_pv`, the program is this subcommand.
    Status(StatusArgs),
    /// Release the PersistentVolumes of Nodes gone for good.
    ///
    /// Run as a small Deployment with leader election (a Lease in
    /// `--namespace-name`): the leader watches Nodes and this program's PVs,
    /// marks a PV whose Node is absent (`…/node-gone-since`), and once the
    /// Node has been absent for `--node-gone-grace` releases the PV without
    /// a wipe (the disk left with the node): records why, removes the
    /// cleanup finalizer, deletes the PV and, where the PV says so, its
    /// claim.
    NodeCleanup(NodeCleanupArgs),
}

/// Flags of the controller (the default command).
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Bind address for the metrics and health endpoints (Go style, `:8080` means every interface).
    #[arg(long, env = "LP_METRICS_ADDR", default_value = ":8080", value_parser = parse_listen_addr)]
    pub metrics_addr: SocketAddr,
    /// The name of the Node this program runs on (required).
    #[arg(long, env = "LP_NODE_NAME", required = true)]
    pub node_name: Option<String>,
    /// The namespace holding the PV spec ConfigMaps, normally the pod's own (required).
    #[arg(long, env = "LP_NAMESPACE_NAME", required = true)]
    pub namespace_name: Option<String>,
    /// How often devices are rescanned even without a change (Go duration: `30s`, `5m`, `1h`).
    #[arg(long, env = "LP_POLLING_INTERVAL", default_value = "5m", value_parser = parse_interval)]
    pub polling_interval: Duration,
    /// Accepted for compatibility and ignored: Released PersistentVolumes are
    /// cleaned on their watch events, retried with backoff, and every PV is
    /// looked at again each `--polling-interval`.
    #[arg(long, env = "LP_CLEANUP_INTERVAL", value_parser = parse_interval)]
    pub cleanup_interval: Option<Duration>,
    /// How long a PV's device must stay missing before it counts as lost (an
    /// Available PV is then deleted; others are reported).
    #[arg(long, env = "LP_DEVICE_LOSS_GRACE", default_value = "30s", value_parser = parse_go_duration)]
    pub device_loss_grace: Duration,
    /// Watch `deviceDir` with inotify so new, removed or renamed entries are
    /// handled at once; with `false` only the poll finds them.
    #[arg(long, env = "LP_WATCH_DEVICE_DIR", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub watch_device_dir: bool,
    /// How wipes write zeros: `zeroout` (the kernel's `BLKZEROOUT`, offloaded
    /// to the device where it can; writes where the device cannot) or
    /// `writes` (`O_DIRECT` writes of a zeroed buffer, for devices whose
    /// write-zeroes is slow or not trusted).
    #[arg(long, env = "LP_WIPE_METHOD", value_enum, default_value_t = ZeroMethod::WriteZeroes)]
    pub wipe_method: ZeroMethod,
    /// Most full wipes (`wipeMode: Full`) running at once on this node; the
    /// others wait their turn (signature wipes never wait).
    #[arg(long, env = "LP_MAX_CONCURRENT_WIPES", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_concurrent_wipes: u16,
    /// Human-readable logs at debug level instead of JSON at info level.
    #[arg(long, env = "LP_DEVELOPMENT", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub development: bool,
    /// The PV spec ConfigMap used when the Node has no annotation naming one.
    #[arg(long, env = "LP_DEFAULT_PV_SPEC_CONFIGMAP")]
    pub default_pv_spec_configmap: Option<String>,
    /// This pod's name, recorded as the reporting instance of Events.
    #[arg(long, env = "LP_POD_NAME")]
    pub pod_name: Option<String>,
}

/// Flags of the `node-cleanup` controller.
#[derive(Debug, Args)]
pub struct NodeCleanupArgs {
    /// How long a PV's Node must be absent before its PVs are released
    /// without a wipe (Go duration: `30s`, `10m`, `1h`).
    #[arg(long, env = "LP_NODE_GONE_GRACE", default_value = "10m", value_parser = parse_go_duration)]
    pub node_gone_grace: Duration,
    /// The namespace of the leader election Lease, normally the pod's own (required).
    #[arg(long, env = "LP_NAMESPACE_NAME", required = true)]
    pub namespace_name: String,
    /// This pod's name: the Lease holder identity and the reporting
    /// instance of Events (default: the hostname).
    #[arg(long, env = "LP_POD_NAME")]
    pub pod_name: Option<String>,
    /// Bind address for the metrics and health endpoints (Go style, `:8081` means every interface).
    #[arg(long, env = "LP_METRICS_ADDR", default_value = ":8081", value_parser = parse_listen_addr)]
    pub metrics_addr: SocketAddr,
    /// Human-readable logs at debug level instead of JSON at info level.
    #[arg(long, env = "LP_DEVELOPMENT", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub development: bool,
    /// Name of the leader election Lease in `--namespace-name`.
    #[arg(
        long,
        env = "LP_LEASE_NAME",
        default_value = "local-pv-provisioner-node-cleanup"
    )]
    pub lease_name: String,
}

/// Flags of the `scan` dry run.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// A YAML file holding the PV spec: a ConfigMap manifest or just its `data` map.
    #[arg(long, conflicts_with_all = ["device_dir", "device_name_filter", "volume_mode", "fs_type", "storage_class_name"])]
    pub spec_file: Option<PathBuf>,
    /// `deviceDir`: the directory whose entries are candidate devices.
    #[arg(long, required_unless_present = "spec_file")]
    pub device_dir: Option<String>,
    /// `deviceNameFilter`: regular expression matched against entry names.
    #[arg(long, default_value = ".*")]
    pub device_name_filter: Option<String>,
    /// `volumeMode`: `Filesystem` or `Block`.
    #[arg(long, default_value = "Block")]
    pub volume_mode: Option<String>,
    /// `fsType`: `ext4`, `xfs` or `btrfs` (Filesystem mode only).
    #[arg(long)]
    pub fs_type: Option<String>,
    /// `storageClassName` of the PVs.
    #[arg(long)]
    pub storage_class_name: Option<String>,
    /// Node name to build PV names and affinity for (default: this machine's hostname).
    #[arg(long, env = "LP_NODE_NAME")]
    pub node_name: Option<String>,
}

/// Flags of the `status` report (also `kubectl local-pv`).
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = StatusOutput::Table)]
    pub output: StatusOutput,
    /// The kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// For tests: the time ages are computed against (RFC 3339) instead of the clock.
    #[arg(long, hide = true)]
    pub now: Option<String>,
}

/// Output formats of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusOutput {
    /// A table per node.
    Table,
    /// The table with storage class, volume mode, device number, stable id and claim history.
    Wide,
    /// One JSON document: a list of nodes, each with its volumes and error devices.
    Json,
}

/// Parses a Go `time.ParseDuration` string such as `300ms`, `1.5h` or `2h45m`.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (expected e.g. 30s, 5m, 1h30m)");
    let body = text.strip_prefix('+').unwrap_or(text);
    if body.starts_with('-') {
        return Err(format!("invalid duration {text:?}: must not be negative"));
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(invalid());
    }
    let mut rest = body;
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, remainder) = after.split_at(unit_len);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("invalid duration {text:?}: missing unit")),
            other => return Err(format!("invalid duration {text:?}: unknown unit {other:?}")),
        };
        total_nanos += value * nanos_per_unit;
        rest = remainder;
    }
    if total_nanos > u64::MAX as f64 {
        return Err(format!("invalid duration {text:?}: too large"));
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// Parses an interval flag: a Go duration that must be greater than zero.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let duration = parse_go_duration(text)?;
    if duration.is_zero() {
        return Err(format!(
            "invalid interval {text:?}: must be greater than zero"
        ));
    }
    Ok(duration)
}

/// Parses a Go-style listen address: `:8080`, `127.0.0.1:8080`, `[::1]:8080`
/// or `localhost:8080`.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid listen address {text:?}: bad port"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            format!("invalid listen address {text:?} (expected e.g. :8080 or 127.0.0.1:8080)")
        })
}

/// Settings of the controller after validation: every required value present.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// Bind address of the metrics and health endpoints.
    pub metrics_addr: SocketAddr,
    /// This node's name.
    pub node_name: String,
    /// Namespace of the PV spec ConfigMaps.
    pub namespace: String,
    /// Device rescan interval.
    pub polling_interval: Duration,
    /// Whether the ignored `--cleanup-interval` was given (logged at start).
    pub cleanup_interval_given: bool,
    /// How long a device must be missing before it counts as lost.
    pub device_loss_grace: Duration,
    /// Whether `deviceDir` is watched with inotify.
    pub watch_device_dir: bool,
    /// How wipes write zeros first.
    pub wipe_method: ZeroMethod,
    /// Most full wipes at once.
    pub max_concurrent_wipes: u16,
    /// Development logging.
    pub development: bool,
    /// Fallback PV spec ConfigMap name.
    pub default_pv_spec_configmap: Option<String>,
    /// Reporting instance for Events and wipe marks.
    pub instance: String,
}

impl ControllerArgs {
    /// Turns parsed flags into settings; fails only when a required flag is
    /// missing, which clap already rejects unless a subcommand ran.
    pub fn into_settings(self) -> Result<ControllerSettings, String> {
        let node_name = non_empty(self.node_name, "--node-name / LP_NODE_NAME")?;
        let namespace = non_empty(self.namespace_name, "--namespace-name / LP_NAMESPACE_NAME")?;
        let default_pv_spec_configmap = self
            .default_pv_spec_configmap
            .filter(|name| !name.is_empty());
        // Events accept a reporting instance of at most 128 characters.
        let mut instance = self
            .pod_name
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| format!("local-pv-provisioner-{node_name}"));
        while instance.len() > 128 {
            instance.pop();
        }
        Ok(ControllerSettings {
            metrics_addr: self.metrics_addr,
            node_name,
            namespace,
            polling_interval: self.polling_interval,
            cleanup_interval_given: self.cleanup_interval.is_some(),
            device_loss_grace: self.device_loss_grace,
            watch_device_dir: self.watch_device_dir,
            wipe_method: self.wipe_method,
            max_concurrent_wipes: self.max_concurrent_wipes,
            development: self.development,
            default_pv_spec_configmap,
            instance,
        })
    }
}

fn non_empty(value: Option<String>, flag: &str) -> Result<String, String> {
    match value {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(format!("the required flag {flag} is missing or empty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let cases = [
            ("0", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("300ms", Duration::from_millis(300)),
            ("2us", Duration::from_micros(2)),
            ("2µs", Duration::from_micros(2)),
            ("7ns", Duration::from_nanos(7)),
            ("+10s", Duration::from_secs(10)),
            ("1m0.5s", Duration::from_millis(60_500)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_go_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_durations_are_rejected_with_the_input_named() {
        for text in [
            "", "5", "m", "5x", "-5s", "1..5s", ".s", "5 m", "abc", "1e3s",
        ] {
            let error = parse_go_duration(text).expect_err(text);
            assert!(error.contains(&format!("{text:?}")), "{error}");
        }
    }

    #[test]
    fn intervals_must_be_positive() {
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("0s").is_err());
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn listen_addresses_parse_go_style() {
        assert_eq!(
            parse_listen_addr(":8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:9"),
            Ok("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(parse_listen_addr("[::1]:9"), Ok("[::1]:9".parse().unwrap()));
        assert!(parse_listen_addr(":http").is_err());
        assert!(parse_listen_addr("8080").is_err());
    }

    #[test]
    fn controller_flags_come_from_the_environment_names() {
        let cli = Cli::try_parse_from([
            "local-pv-provisioner",
            "--node-name=n1",
            "--namespace-name=ns",
            "--polling-interval=30s",
            "--development",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        let settings = cli.controller.into_settings().unwrap();
        assert_eq!(settings.node_name, "n1");
        assert_eq!(settings.polling_interval, Duration::from_secs(30));
        assert!(!settings.cleanup_interval_given);
        assert!(settings.development);
        assert_eq!(settings.metrics_addr.port(), 8080);
    }

    #[test]
    fn missing_required_flag_is_an_error() {
        let error = Cli::try_parse_from(["local-pv-provisioner", "--node-name=n1"]).unwrap_err();
        assert!(error.to_string().contains("--namespace-name"), "{error}");
    }

    #[test]
    fn node_cleanup_takes_its_own_flags() {
        let cli = Cli::try_parse_from([
            "local-pv-provisioner",
            "node-cleanup",
            "--namespace-name=ns",
            "--node-gone-grace=2s",
        ])
        .unwrap();
        let Some(Command::NodeCleanup(args)) = cli.command else {
            panic!("not node-cleanup: {:?}", cli.command);
        };
        assert_eq!(args.node_gone_grace, Duration::from_secs(2));
        assert_eq!(args.metrics_addr.port(), 8081);
        assert_eq!(args.lease_name, "local-pv-provisioner-node-cleanup");
        assert!(!args.development);
        let error = Cli::try_parse_from(["local-pv-provisioner", "node-cleanup"]).unwrap_err();
        assert!(error.to_string().contains("--namespace-name"), "{error}");
    }

    #[test]
    fn scan_needs_no_controller_flags() {
        let cli =
            Cli::try_parse_from(["local-pv-provisioner", "scan", "--device-dir=/dev"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Scan(_))));
    }
}
