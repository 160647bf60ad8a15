//! Helpers for the services' integration tests (feature `testing`): a
//! service on a loopback port, a service binary as a child process, and
//! `promtool check metrics`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use poem::Endpoint;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::server;

/// A service serving on `127.0.0.1:<free port>` inside this process.
pub struct LoopbackServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl LoopbackServer {
    /// Binds a free loopback port and serves `ep` on it.
    pub async fn start<E: Endpoint + 'static>(ep: E) -> Self {
        let listener = server::bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let addr = listener.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(listener.serve(ep, async {
            let _ = stopped.await;
        }));
        Self { addr, stop: Some(stop), task }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Signals shutdown and returns the serve task, which ends once the
    /// requests in flight are answered.
    pub fn shutdown(mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
    }
}

/// A service binary running as a child process.
pub struct ChildService {
    child: Child,
    /// The address it reported listening on.
    pub addr: SocketAddr,
    stderr: mpsc::Receiver<String>,
}

impl ChildService {
    /// Starts `binary` with `--listen 127.0.0.1:0` and `args`, and waits for
    /// the log line containing `ready` (which must end in `addr=<ip:port>`).
    pub fn start(binary: &str, args: &[&str], envs: &[(&str, &str)], ready: &str) -> Self {
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|e| panic!("{binary} did not log {ready:?}: {e}"));
            if line.contains(ready) {
                let addr = line.rsplit("addr=").next().unwrap().trim();
                break addr.parse().unwrap_or_else(|e| panic!("bad addr in {line:?}: {e}"));
            }
        };
        Self { child, addr, stderr: rx }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as `docker stop` does.
    pub fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log lines written so far (and not yet taken).
    pub fn log_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
}

impl Drop for ChildService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `promtool check metrics` on `text`; Err carries promtool's output.
pub fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run promtool: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() && report.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool ({}): {report}", out.status))
    }
}
