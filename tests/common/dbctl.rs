//! Runs the built `dbctl` binary as a child process, the way scripts do, and
//! captures what it printed and its exit code.

use anyhow::Context;
use serde_json::Value;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Longest a single dbctl run may take before the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What one dbctl run produced.
#[derive(Debug)]
pub struct Run {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.stdout)
            .with_context(|| format!("stdout is not JSON: {:?}", self.stdout_text()))
    }
}

/// Runs dbctl with `arguments`, extra environment variables and, when given,
/// `stdin` as its standard input. `MIMORI_ENDPOINTS`, `MIMORI_TOKEN` and `NO_COLOR`
/// are removed from its environment unless set in `environment`.
pub async fn run_dbctl(
    arguments: &[&str],
    environment: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> anyhow::Result<Run> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dbctl"));
    command
        .args(arguments)
        .env_remove("MIMORI_ENDPOINTS")
        .env_remove("MIMORI_TOKEN")
        .env_remove("NO_COLOR")
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in environment {
        command.env(name, value);
    }
    let mut child = command.spawn().context("spawn dbctl")?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(bytes).await?;
        drop(pipe);
    }
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .context("dbctl did not finish in time")??;
    Ok(Run {
        exit_code: output.status.code().context("dbctl killed by a signal")?,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
