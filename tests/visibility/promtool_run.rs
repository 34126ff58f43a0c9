//! Runs Prometheus' `promtool` (Debian's `prometheus` package ships it;
//! `.ci/run` installs it). Shared by `tests/visibility` and
//! `tests/dashboard.rs`. A missing promtool fails the test, saying how to
//! install it: never a silent skip.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `promtool args...` with `input` on its standard input; returns its
/// output, whatever its exit status.
pub fn promtool(args: &[&str], input: &str) -> Output {
    let spawned = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed: install Debian's prometheus package \
             (apt-get install -y prometheus), as .ci/run does"
        ),
        Err(error) => panic!("cannot run promtool: {error}"),
    };
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(input.as_bytes())
        .expect("write to promtool");
    child.wait_with_output().expect("promtool finishes")
}

/// What promtool wrote, both streams.
pub fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
