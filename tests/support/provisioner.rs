//! Runs the real `local-pv-provisioner` binary as a child process against a
//! kubeconfig, the way a user would, and reads its metrics and readiness over
//! HTTP. The child is killed on drop; its log is printed when a test fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running provisioner process.
pub struct ProvisionerProcess {
    child: Option<Child>,
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
        let mut command = Command::new(env!("CARGO_BIN_EXE_local-pv-provisioner"));
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

/// Polls `check` every 50 ms until it returns `Some`, failing the test with
/// `what` after `limit`. A wait for an asynchronous outcome, not a timing
/// assertion: the limit is generous.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
