//! Entry point: parse flags, then run the `scan` dry run, the `status`
//! report (also as the kubectl plugin `kubectl-local_pv`), the
//! `node-cleanup` mode or the controller until SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use local_pv_provisioner::cli::scan::run_scan;
use local_pv_provisioner::cli::status::run_status;
use local_pv_provisioner::config::{Cli, Command, ControllerSettings};
use local_pv_provisioner::controller::{node_cleanup, provisioner};
use local_pv_provisioner::observe::health::Health;
use local_pv_provisioner::observe::metrics::Metrics;
use local_pv_provisioner::observe::server;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    local_pv_provisioner::controller::memory::limit_allocator_caches();
    let cli = match Cli::try_parse_from(arguments()) {
        Ok(cli) => cli,
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            error.exit()
        }
        Err(error) => {
            let text = error.to_string();
            let line: Vec<&str> = text
                .lines()
                .take_while(|line| !line.is_empty() && !line.starts_with("Usage:"))
                .map(str::trim)
                .collect();
            eprintln!("{} (see --help)", line.join(" "));
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Scan(args)) => print_or_fail(run_scan(&args)),
        Some(Command::Status(args)) => print_or_fail(run_status(&args)),
        Some(Command::NodeCleanup(args)) => {
            let settings = match node_cleanup::Settings::from_args(args) {
                Ok(settings) => settings,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(2);
                }
            };
            init_logging(settings.development);
            run_to_the_end(run_node_cleanup(settings))
        }
        None => {
            let settings = match cli.controller.into_settings() {
                Ok(settings) => settings,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(2);
                }
            };
            init_logging(settings.development);
            run_to_the_end(run_controller(settings))
        }
    }
}

/// Runs a long-running mode to its end on one runtime thread. Its work is
/// waiting on the API server and on devices; what is slow or CPU-bound
/// runs off it on the blocking pool (scans, probes, adoption checks,
/// wipes; at most [`BLOCKING_THREADS`] at once), which exits when idle.
/// One thread rather than two workers keeps a quiet node smaller: one
/// stack and the scheduler's per-worker state less, and no two threads
/// contending for the one malloc heap
/// ([`local_pv_provisioner::controller::memory`]). BENCH.md, issue 19's
/// fourth round: 13.9 MiB instead of 15.1 idle at 200 PVs for this step
/// alone; the start did not get slower (1.16 CPU-s in the 30 s after 1000
/// devices, all PVs in 1.17 s, measured after the round's three changes
/// together).
fn run_to_the_end(mode: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Threads of the blocking pool: the cold start probes 16 devices at once,
/// wipes run up to `LP_MAX_CONCURRENT_WIPES`.
const BLOCKING_THREADS: usize = 32;

/// The command line; run as `kubectl-local_pv` (`kubectl local-pv`), the
/// program is `local-pv-provisioner status` with the same flags.
fn arguments() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let plugin = args
        .first()
        .and_then(|program| std::path::Path::new(program).file_name())
        .is_some_and(|name| name == "kubectl-local_pv");
    if plugin {
        args.insert(1, "status".into());
    }
    args
}

/// Prints a subcommand's output, or its one-line error with exit status 1.
fn print_or_fail(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(development: bool) {
    let default_level = if development { "debug" } else { "info" };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Colour codes only on a terminal, never in a log file or collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if development {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

/// The Kubernetes client of the in-cluster configuration, `KUBECONFIG` or
/// `~/.kube/config`.
async fn client() -> Result<kube::Client, String> {
    let config = kube::Config::infer()
        .await
        .map_err(|error| format!("cannot find the cluster configuration (in-cluster, KUBECONFIG or ~/.kube/config): {error}"))?;
    local_pv_provisioner::api::client::with_bounded_pool(config)
        .map_err(|error| format!("cannot build the Kubernetes client: {error}"))
}

/// A channel that turns true on SIGTERM or SIGINT.
fn stop_on_signals() -> Result<watch::Receiver<bool>, String> {
    let (stop, stopped) = watch::channel(false);
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|error| format!("cannot handle SIGTERM: {error}"))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|error| format!("cannot handle SIGINT: {error}"))?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
        let _ = stop.send(true);
    });
    Ok(stopped)
}

async fn run_node_cleanup(settings: node_cleanup::Settings) -> Result<(), String> {
    let client = client().await?;
    let stopped = stop_on_signals()?;
    let metrics = node_cleanup::NodeCleanupMetrics::new();
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let mut stopped = stopped.clone();
        let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
            .await
            .map_err(|error| format!("cannot listen on {}: {error}", settings.metrics_addr))?;
        let addr = listener.local_addr().unwrap_or(settings.metrics_addr);
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
        tokio::spawn(node_cleanup::serve(
            listener,
            metrics.clone(),
            ready.clone(),
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        ))
    };
    tracing::info!(namespace = %settings.namespace, grace = ?settings.grace, identity = %settings.identity, "starting node-cleanup");
    let outcome = node_cleanup::run(client, settings, metrics, ready, stopped).await;
    server.abort();
    tracing::info!("stopped");
    outcome
}

async fn run_controller(settings: ControllerSettings) -> Result<(), String> {
    let client = client().await?;
    let metrics = Metrics::new(&settings.node_name);
    let health = Health::default();
    let stopped = stop_on_signals()?;

    let server = {
        let mut stopped = stopped.clone();
        let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
            .await
            .map_err(|error| format!("cannot listen on {}: {error}", settings.metrics_addr))?;
        // The bound address: with port 0 the kernel picks the port.
        let addr = listener.local_addr().unwrap_or(settings.metrics_addr);
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
        tokio::spawn(server::serve(
            listener,
            metrics.clone(),
            health.clone(),
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        ))
    };
    tracing::info!(node = %settings.node_name, namespace = %settings.namespace, "starting");
    if settings.cleanup_interval_given {
        tracing::info!(
            "--cleanup-interval (LP_CLEANUP_INTERVAL) has no effect: Released PVs are cleaned on their watch events, retried with backoff, and looked at again each --polling-interval"
        );
    }
    provisioner::run(client, settings, metrics, health, stopped).await;
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}
