//! Runs the real `local-pv-provisioner` binary as a child process against a
//! kubeconfig, the way a user would, and reads its metrics and readiness over
//! HTTP: single reads, waits for a value, and the reconcile counter that
//! tells a test when the program has looked at a change. The child is killed
//! on drop; its log is printed when a test fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::world::waits::{WAIT, eventually};

/// A running provisioner process.
pub struct ProvisionerProcess {
    child: Option<Child>,
    /// `--node-name`: the `node` label of every metric sample.
    node: String,
    /// Port of `/metrics`, `/healthz` and `/readyz` on 127.0.0.1, read from
    /// the log once the process has bound it.
    metrics_port: OnceLock<u16>,
    log_path: PathBuf,
}

/// Settings of one provisioner process.
pub struct ProvisionerOptions<'a> {
    /// Kubeconfig to reach the API server.
    pub kubeconfig: &'a Path,
    /// `--node-name`.
    pub node: &'a str,
    /// `--namespace-name`.
    pub namespace: &'a str,
    /// Extra environment, e.g. `LP_POLLING_INTERVAL`.
    pub env: Vec<(&'a str, String)>,
    /// Directory for the log file.
    pub log_dir: &'a Path,
}

/// The program the tests and benchmarks start: this build's binary, or the
/// one `LPP_PROGRAM` names (for example the container image's static musl
/// build, measured by the speed benchmark as shipped).
fn program() -> std::ffi::OsString {
    std::env::var_os("LPP_PROGRAM")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_local-pv-provisioner").into())
}

/// Numbers the log files of the processes one test binary starts.
static STARTED: AtomicUsize = AtomicUsize::new(0);

impl ProvisionerProcess {
    /// Starts the binary with the flags given through `LP_*` variables. It
    /// listens on a port the kernel picks (`127.0.0.1:0`), so parallel tests
    /// never race for one; the port is read from its log.
    pub fn start(options: ProvisionerOptions<'_>) -> Self {
        let number = STARTED.fetch_add(1, Ordering::Relaxed);
        // A node name may be 253 characters; a file name at most 255 bytes.
        let node_part: String = options.node.chars().take(64).collect();
        let log_path = options
            .log_dir
            .join(format!("provisioner-{node_part}-{number}.log"));
        let log = File::create(&log_path).expect("log file");
        let mut command = Command::new(program());
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", options.kubeconfig)
            .env("LP_NODE_NAME", options.node)
            .env("LP_NAMESPACE_NAME", options.namespace)
            .env("LP_METRICS_ADDR", "127.0.0.1:0")
            .env("LP_POD_NAME", format!("test-{}", options.node))
            .env("LP_DEVELOPMENT", "true")
            .env("RUST_LOG", "debug,hyper=info,tower=info,kube_client=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (key, value) in options.env {
            command.env(key, value);
        }
        let child = command.spawn().expect("start local-pv-provisioner");
        ProvisionerProcess {
            child: Some(child),
            node: options.node.to_string(),
            metrics_port: OnceLock::new(),
            log_path,
        }
    }

    /// Starts the binary's `node-cleanup` mode as pod `pod` (the Lease
    /// holder identity), its Lease in `namespace`, with the flags given
    /// through `LP_*` variables (`env`, e.g. `LP_NODE_GONE_GRACE`); like
    /// [`Self::start`] it listens on a port the kernel picks. Its metrics
    /// carry no `node` label: read them with [`Self::metric`].
    pub fn start_node_cleanup(
        kubeconfig: &Path,
        namespace: &str,
        pod: &str,
        env: Vec<(&str, String)>,
        log_dir: &Path,
    ) -> Self {
        let number = STARTED.fetch_add(1, Ordering::Relaxed);
        let log_path = log_dir.join(format!("node-cleanup-{pod}-{number}.log"));
        let log = File::create(&log_path).expect("log file");
        let mut command = Command::new(program());
        command
            .arg("node-cleanup")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", kubeconfig)
            .env("LP_NAMESPACE_NAME", namespace)
            .env("LP_METRICS_ADDR", "127.0.0.1:0")
            .env("LP_POD_NAME", pod)
            .env("LP_DEVELOPMENT", "true")
            .env("RUST_LOG", "debug,hyper=info,tower=info,kube_client=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .expect("start local-pv-provisioner node-cleanup");
        ProvisionerProcess {
            child: Some(child),
            node: String::new(),
            metrics_port: OnceLock::new(),
            log_path,
        }
    }

    /// The metrics port, once the process has logged that it serves there.
    fn metrics_port(&self) -> Option<u16> {
        if let Some(port) = self.metrics_port.get() {
            return Some(*port);
        }
        let log = self.log();
        let line = log.lines().find(|line| line.contains("serving /metrics"))?;
        let (_, after) = line.split_once("127.0.0.1:")?;
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        let port = digits.parse().ok()?;
        Some(*self.metrics_port.get_or_init(|| port))
    }

    /// `GET path` on the metrics port: (status code, body), or `None` when
    /// nothing listens yet.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let port = self.metrics_port()?;
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())?;
        Some((status, body))
    }

    /// Whether `/readyz` answers 200.
    pub async fn is_ready(&self) -> bool {
        matches!(self.get("/readyz").await, Some((200, _)))
    }

    /// The value of one sample of `/metrics`, e.g.
    /// `local_pv_provisioner_available_devices{node="n"}`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
    }

    /// The sample name of metric `local_pv_provisioner_<name>` for this
    /// process's node, e.g. `local_pv_provisioner_wipes_total{node="n"}`.
    pub fn sample(&self, name: &str) -> String {
        format!("local_pv_provisioner_{name}{{node=\"{}\"}}", self.node)
    }

    /// The sample of a metric with one label besides `node`, e.g.
    /// `wipe_failures_total{node="n",reason="SameDevice"}`.
    pub fn labelled_sample(&self, name: &str, label: &str, value: &str) -> String {
        format!(
            "local_pv_provisioner_{name}{{node=\"{}\",{label}=\"{value}\"}}",
            self.node
        )
    }

    /// The value of `local_pv_provisioner_<name>` for this node.
    pub async fn value(&self, name: &str) -> Option<f64> {
        self.metric(&self.sample(name)).await
    }

    /// Waits until `local_pv_provisioner_<name>` of this node reads `value`.
    pub async fn wait_metric(&self, name: &str, value: f64) {
        let sample = self.sample(name);
        eventually(&format!("{sample} == {value}"), WAIT, || async {
            (self.metric(&sample).await == Some(value)).then_some(())
        })
        .await;
    }

    /// Waits until the sample `sample` (see [`Self::labelled_sample`])
    /// reads at least `value`.
    pub async fn wait_sample_at_least(&self, sample: &str, value: f64) {
        eventually(&format!("{sample} >= {value}"), WAIT, || async {
            (self.metric(sample).await >= Some(value)).then_some(())
        })
        .await;
    }

    /// Waits until `/readyz` answers 200 (`ready`) or anything else.
    pub async fn wait_ready(&self, ready: bool) {
        let what = if ready {
            "/readyz to answer 200"
        } else {
            "/readyz to fail"
        };
        eventually(what, WAIT, || async {
            (self.is_ready().await == ready).then_some(())
        })
        .await;
    }

    /// Reconcile passes finished so far (`reconciles_total`); 0 before the
    /// metrics endpoint answers.
    pub async fn reconciles(&self) -> f64 {
        self.value("reconciles_total").await.unwrap_or(0.0)
    }

    /// Waits until `passes` whole reconcile passes have begun and finished
    /// after this call: the counter must go up by `passes + 1`, as a pass
    /// already running when it is called may end after it. The signal a
    /// check of "nothing happened" rests on: every change made before the
    /// call was seen by those passes. Something must keep passes coming: a
    /// short `LP_POLLING_INTERVAL`, or changes the program watches.
    pub async fn wait_for_fresh_passes(&self, passes: u32) {
        let start = self.reconciles().await;
        let target = start + f64::from(passes) + 1.0;
        eventually(
            &format!("{passes} reconcile pass(es) begun after reconciles_total was {start}"),
            WAIT,
            || async { (self.reconciles().await >= target).then_some(()) },
        )
        .await;
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn stop_with(&mut self, signal: nix::sys::signal::Signal) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("local-pv-provisioner did not exit within 30 s of {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for ProvisionerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("---- last lines of {} ----", self.log_path.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
