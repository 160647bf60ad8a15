//! The real `frontend-proxy` binary, started with a config written to a
//! temporary directory and stopped when the handle drops; with its admin
//! interface, requests to it.

use super::{client, send, LIMIT};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ProxyProcess {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    log: PathBuf,
    /// The admin interface, for [`ProxyProcess::get`] and [`ProxyProcess::post`].
    pub admin: Option<SocketAddr>,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_frontend-proxy")
}

/// Runs the proxy on `config` with `args` where it must refuse to start:
/// fails the test if it starts; returns what it printed on stderr.
pub fn refused_at_start(config: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(binary()).arg("-c").arg(&path).args(args).output().expect("run the proxy");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "started:\n{stderr}");
    stderr
}

/// A proxy configuration not started yet (so a test can prepare DNS first).
pub struct PendingProxy(String);

impl PendingProxy {
    pub async fn start_at(self, ready_addr: SocketAddr) -> ProxyProcess {
        ProxyProcess::start(&self.0, ready_addr).await
    }
}

impl ProxyProcess {
    pub fn empty(config: String) -> PendingProxy {
        PendingProxy(config)
    }

    /// Starts the proxy and waits until `ready_addr` accepts connections.
    pub async fn start(config: &str, ready_addr: SocketAddr) -> Self {
        Self::start_with_args(config, ready_addr, &[]).await
    }

    /// [`ProxyProcess::start`] with more flags; `--concurrency 2` and
    /// `--log-level info` unless `args` says otherwise.
    pub async fn start_with_args(config: &str, ready_addr: SocketAddr, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config).expect("write config");
        let log = dir.path().join("proxy.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        // Two workers unless the test picks (one makes the per-worker
        // upstream pool deterministic); info logs unless it picks.
        let mut defaults = Vec::new();
        for (flag, value) in [("--concurrency", "2"), ("--log-level", "info")] {
            if !args.contains(&flag) {
                defaults.extend([flag, value]);
            }
        }
        let child = Command::new(binary())
            .arg("-c")
            .arg(&path)
            .args(defaults)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn frontend-proxy");
        let mut p = Self { child, dir, config: path, log, admin: None };
        p.wait_listening(ready_addr).await;
        // Listeners with settings of their own are separate services that
        // start listening one after another: when the test waits for a
        // listener, it gets all of them (not when it waits for the admin,
        // whose listeners may open only once clusters are warm).
        let listeners = listener_addresses(config);
        if listeners.contains(&ready_addr) {
            for addr in listeners {
                p.wait_listening(addr).await;
            }
        }
        p
    }

    async fn wait_listening(&mut self, addr: SocketAddr) {
        let start = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("frontend-proxy exited early ({status}):\n{}", self.log());
            }
            assert!(start.elapsed() < LIMIT, "proxy did not listen on {addr}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the proxy with `workers` worker threads and its admin
    /// interface on `admin`; returns once the admin answers at all,
    /// whatever its state (listeners open only once clusters are warm).
    pub async fn with_admin(config: &str, admin: SocketAddr, workers: usize) -> Self {
        let mut p = Self::start_with_args(config, admin, &["--concurrency", &workers.to_string()]).await;
        p.admin = Some(admin);
        p
    }

    /// [`ProxyProcess::with_admin`] with one worker, once `/ready` says LIVE.
    pub async fn live(config: &str, admin: SocketAddr) -> Self {
        let p = Self::with_admin(config, admin, 1).await;
        let start = Instant::now();
        // Polled until LIVE: a request that fails while the proxy starts
        // (seen once under a loaded CI: a reset on the admin port) is
        // asked again, as a `503` is.
        let ready = format!("http://{}/ready", p.admin());
        while !matches!(client().get(&ready).send().await, Ok(r) if r.status() == 200) {
            assert!(start.elapsed() < LIMIT, "proxy never became LIVE:\n{}", p.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p
    }

    fn admin(&self) -> SocketAddr {
        self.admin.expect("a proxy started with_admin")
    }

    /// GETs `path_and_query` from the admin interface.
    pub async fn get(&self, path_and_query: &str) -> (u16, String) {
        send(client().get(format!("http://{}{path_and_query}", self.admin()))).await
    }

    /// POSTs to `path` on the admin interface.
    pub async fn post(&self, path: &str) -> (u16, String) {
        send(client().post(format!("http://{}{path}", self.admin()))).await
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit; `None` if it is still running at the limit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A test that failed on something other than an assert naming the
        // log (a refused connection, an unwrap) still shows what the proxy
        // said: a failure seen once in CI cannot be run again to ask.
        if std::thread::panicking() {
            eprintln!("--- frontend-proxy log (pid {}) ---\n{}--- end of log ---", self.child.id(), self.log());
        }
    }
}

/// The TCP addresses of the config's static listeners that a client can
/// connect to as written (not the wildcard ones, not pipes).
fn listener_addresses(config: &str) -> Vec<SocketAddr> {
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(config) else { return Vec::new() };
    let Some(listeners) = doc["static_resources"]["listeners"].as_sequence() else { return Vec::new() };
    listeners
        .iter()
        .filter_map(|l| {
            let socket = &l["address"]["socket_address"];
            let ip: std::net::IpAddr = socket["address"].as_str()?.parse().ok()?;
            let port = u16::try_from(socket["port_value"].as_u64()?).ok()?;
            (!ip.is_unspecified() && port != 0).then_some(SocketAddr::new(ip, port))
        })
        .collect()
}
