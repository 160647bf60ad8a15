//! A small network of real hosts: one network namespace per host, each
//! with its own address on a veth whose other end is a port of a bridge
//! (in a namespace of its own, the switch). Nothing is added to the
//! machine's own namespace, so the suite can reach only the hosts it made.
//!
//! Code of the test process runs "on" a host through a [`HostRuntime`]: a
//! thread that entered the host's namespace and drives a current-thread
//! tokio runtime, so every socket its tasks open belongs to that host.
//! Processes run on a host through `ip netns exec`.
//!
//! Everything is torn down when the [`Lab`] drops, on success or panic;
//! namespaces a killed run left behind (their name carries its pid) are
//! removed by the next run.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Every namespace of this suite starts with this.
const PREFIX: &str = "fpchaos-";
/// The lab's subnet, /24; private to its own namespaces.
pub const SUBNET: [u8; 3] = [10, 77, 0];

pub fn addr(host_octet: u8) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], host_octet)
}

/// Runs `ip args`, returning stdout; panics with stderr on failure.
pub fn ip(args: &[&str]) -> String {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A thread inside a host's namespace running a tokio runtime.
pub struct HostRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostRuntime {
    fn start(netns: &str) -> Self {
        let path = PathBuf::from("/run/netns").join(netns);
        let (tx, rx) = mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("ns-{netns}"))
            .spawn(move || {
                let entered = std::fs::File::open(&path).and_then(|f| {
                    use std::os::fd::AsFd;
                    rustix::thread::move_into_link_name_space(
                        f.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(std::io::Error::from)
                });
                if let Err(e) = entered {
                    let _ = tx.send(Err(format!("enter {}: {e}", path.display())));
                    return;
                }
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(format!("runtime: {e}")));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .expect("spawn namespace thread");
        let handle = rx.recv().expect("namespace thread").unwrap_or_else(|e| panic!("{e}"));
        Self { handle, stop: Some(stop), thread: Some(thread) }
    }

    /// Runs `fut` on the host; await the handle from anywhere.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(fut)
    }

    /// Runs `fut` on the host and waits for its result.
    pub async fn run<F>(&self, fut: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn(fut).await.expect("task on a lab host")
    }
}

impl Drop for HostRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The hosts of one test, on one bridge.
pub struct Lab {
    name: String,
    switch: String,
    hosts: Vec<String>,
    runtimes: HashMap<String, HostRuntime>,
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// Makes the hosts `(name, last octet)`; `tag` names this test's lab.
    /// Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for namespaces).
    pub fn new(tag: &str, hosts: &[(&str, u8)]) -> Self {
        assert!(rustix::process::geteuid().is_root(), "the chaos suite makes network namespaces and must run as root");
        remove_stale();
        let name = format!("{PREFIX}{}-{tag}", std::process::id());
        let switch = format!("{name}-sw");
        let mut lab = Self {
            name: name.clone(),
            switch: switch.clone(),
            hosts: Vec::new(),
            runtimes: HashMap::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "set", "lo", "up"]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for (host, octet) in hosts {
            let ns = lab.netns(host);
            ip(&["netns", "add", &ns]);
            lab.hosts.push(host.to_string());
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            // Made inside the two namespaces at once: no name in the machine's own.
            ip(&["link", "add", "name", "eth0", "netns", &ns, "type", "veth", "peer", "name", host, "netns", &switch]);
            ip(&["-n", &switch, "link", "set", host, "master", "br0", "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", addr(*octet)), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        for host in &lab.hosts.clone() {
            let rt = HostRuntime::start(&lab.netns(host));
            lab.runtimes.insert(host.clone(), rt);
        }
        lab
    }

    pub fn netns(&self, host: &str) -> String {
        format!("{}-{host}", self.name)
    }

    /// Code running on `host`.
    pub fn on(&self, host: &str) -> &HostRuntime {
        self.runtimes.get(host).unwrap_or_else(|| panic!("no host {host}"))
    }

    /// `iptables args` on `host`.
    pub fn iptables(&self, host: &str, args: &[&str]) {
        let ns = self.netns(host);
        let mut all = vec!["netns", "exec", &ns, "iptables", "-w"];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Removes every iptables rule on `host`.
    pub fn heal(&self, host: &str) {
        self.iptables(host, &["-F"]);
    }

    /// Starts `program args` on `host`, output to `log`.
    pub fn process(&self, host: &str, program: &Path, args: &[&str], log: &Path) -> Child {
        let ns = self.netns(host);
        let log_file = std::fs::File::create(log).expect("log file");
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn on a lab host")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Threads first: their sockets keep a namespace alive.
        self.runtimes.clear();
        for host in &self.hosts {
            remove_netns(&self.netns(host));
        }
        remove_netns(&self.switch);
    }
}

/// Kills what still runs in `ns` (processes this suite started there) and
/// removes it; quiet if it is gone already.
fn remove_netns(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
}

/// Removes namespaces of earlier runs whose process is gone.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let ns = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = ns.strip_prefix(PREFIX) else { continue };
        let pid = rest.split('-').next().unwrap_or_default();
        if !Path::new("/proc").join(pid).exists() {
            remove_netns(ns);
        }
    }
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; the time it took.
pub async fn wait_for<F, Fut>(limit: Duration, mut cond: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
