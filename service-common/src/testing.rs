//! Helpers for the services' integration tests (feature `testing`): a
//! service on a loopback port, a service binary as a child process,
//! `promtool check metrics`, and real databases: SQLite in memory, or a
//! fresh database on a real PostgreSQL ([`PgCluster`]).
//!
//! PostgreSQL comes from `TEST_POSTGRES_URL` (a superuser URL of a running
//! cluster, as `.ci/run` gives) or else from a private cluster this test
//! process starts with Debian's `postgresql` binaries and that is removed
//! when the process exits.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
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
    /// Lines logged before the ready line, not yet taken: what a service
    /// logs while it starts (its database ready, say) can come first.
    early: RefCell<VecDeque<String>>,
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
        let mut early = VecDeque::new();
        let addr = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|e| panic!("{binary} did not log {ready:?}: {e}"));
            if line.contains(ready) {
                let addr = line.rsplit("addr=").next().unwrap().trim();
                break addr.parse().unwrap_or_else(|e| panic!("bad addr in {line:?}: {e}"));
            }
            early.push_back(line);
        };
        Self { child, addr, early: RefCell::new(early), stderr: rx }
    }

    /// The next log line not yet taken, waiting until `deadline` for one.
    fn next_line(&self, deadline: Instant) -> Option<String> {
        if let Some(line) = self.early.borrow_mut().pop_front() {
            return Some(line);
        }
        self.stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()
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
        let mut lines: Vec<String> = self.early.borrow_mut().drain(..).collect();
        lines.extend(self.stderr.try_iter());
        lines
    }

    /// The log lines not yet taken, up to the first that contains
    /// `pattern`, waiting up to `timeout` for it: a line can be written
    /// after the event a test saw (a readiness answer), or still be with
    /// the reader thread. Returns what it took either way.
    pub fn log_lines_until(&self, pattern: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        while let Some(line) = self.next_line(deadline) {
            let found = line.contains(pattern);
            lines.push(line);
            if found {
                break;
            }
        }
        lines
    }

    /// Waits for the process to exit, then returns its status and every
    /// log line not yet taken, up to the end of its stderr (the reader
    /// thread may still hold the last lines when the exit is seen).
    pub fn wait_with_log(&mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let status = self.wait(timeout);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut lines = Vec::new();
        while let Some(line) = self.next_line(deadline) {
            lines.push(line);
        }
        (status, lines)
    }
}

impl Drop for ChildService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 nobody listens on now, for a server a test starts
/// later (PostgreSQL) or for a dead address; never the same one twice in a
/// test process (a private PostgreSQL takes seconds to bind its own). It is
/// below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`,
/// 32768-60999 by default), from which it picks every `bind(:0)` and every
/// connection's source port: a port probed there could be taken by one of
/// those before the server binds it, and a client dialing it while nobody
/// listens could be given that very port as its source and connect to
/// itself. Candidates are random, so concurrent test processes rarely try
/// the same one; the range ends below `.ci/run`'s PostgreSQL (25432 on), as
/// frontend-proxy's test harness does.
pub fn unused_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    const PORTS: std::ops::Range<u16> = 10_000..25_000;
    let span = u128::from(PORTS.end - PORTS.start);
    for _ in 0..10_000 {
        let port = PORTS.start + (uuid::Uuid::new_v4().as_u128() % span) as u16;
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!("probe 127.0.0.1:{port}: {e}"),
        }
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {PORTS:?}");
}

/// `127.0.0.1` and an [`unused_port`]: an address nobody listens on.
pub fn dead_addr() -> SocketAddr {
    ([127, 0, 0, 1], unused_port()).into()
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

/// The two databases the services run on; every API test runs on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite::memory:`, a database of its own per call.
    Sqlite,
    /// A fresh database on the test PostgreSQL.
    Postgres,
}

impl Backend {
    /// A database URL for one test, on a database nobody else uses.
    pub async fn fresh_url(self) -> String {
        match self {
            Backend::Sqlite => "sqlite::memory:".to_owned(),
            Backend::Postgres => fresh_postgres_database().await,
        }
    }
}

/// Creates an empty database on the test PostgreSQL and returns its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let admin = test_postgres_url();
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| panic!("connect to {admin}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    let _ = conn.close().await;
    let mut url = reqwest::Url::parse(&admin).unwrap();
    url.set_path(&name);
    url.to_string()
}

/// A superuser URL of the test PostgreSQL: `TEST_POSTGRES_URL`, else a
/// cluster private to this process, started on first use.
pub fn test_postgres_url() -> String {
    if let Ok(url) = std::env::var("TEST_POSTGRES_URL") {
        return url;
    }
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(PgCluster::start).url("postgres")
}

/// A PostgreSQL cluster of its own on a free loopback port, in a temporary
/// directory, run as the `postgres` user when the tests run as root (the
/// server refuses root). A watchdog shell holds it: when this process exits
/// (even by a panic or a kill), the watchdog's stdin closes and it stops the
/// server and deletes the directory.
pub struct PgCluster {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    watchdog: Child,
}

const WATCHDOG: &str = r#"
set -e
bindir=$1 dir=$2 port=$3 opts=$4
mkdir -p "$dir"
"$bindir/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
"$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -o "-p $port -k $dir $opts" start >/dev/null ||
    { cat "$dir/server.log" >&2; exit 1; }
echo ready
cat >/dev/null || true
"$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
rm -rf "$dir"
"#;

/// Server settings of test clusters: durability off (the data is thrown
/// away), room for every test's pool.
const SERVER_OPTIONS: &str =
    "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300";

impl PgCluster {
    /// initdb and start; panics with the server's log if that fails.
    pub fn start() -> Self {
        let bindir = postgres_bindir();
        let port = unused_port();
        let dir = std::env::temp_dir().join(format!("pg-test-{}", uuid::Uuid::new_v4().simple()));
        let mut watchdog = as_postgres_user("sh")
            .args(["-c", WATCHDOG, "watchdog"])
            .arg(&bindir)
            .arg(&dir)
            .arg(port.to_string())
            .arg(SERVER_OPTIONS)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the PostgreSQL watchdog: {e}"));
        let mut line = String::new();
        BufReader::new(watchdog.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "PostgreSQL test cluster in {} did not start", dir.display());
        Self { bindir, dir, port, watchdog }
    }

    /// The URL of database `db` as the superuser `postgres` (no password).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]);
    }

    /// Starts the stopped server again, on the same port with the same data.
    pub fn restart(&self) {
        let opts = format!("-p {} -k {} {SERVER_OPTIONS}", self.port, self.dir.display());
        let log = self.dir.join("server.log");
        self.pg_ctl(&["-w", "-l", &log.to_string_lossy(), "-o", &opts, "start"]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = as_postgres_user(&self.bindir.join("pg_ctl").to_string_lossy())
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Closing stdin tells the watchdog to stop the server and clean up.
        drop(self.watchdog.stdin.take());
        let _ = self.watchdog.wait();
    }
}

/// `program` as a command run by the `postgres` user if this process is
/// root, else as this user.
fn as_postgres_user(program: &str) -> Command {
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if is_root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", program]);
        cmd
    } else {
        Command::new(program)
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian's layout), or
/// `PG_BINDIR`.
fn postgres_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "the PostgreSQL tests need a server: set TEST_POSTGRES_URL to a superuser URL, or install \
             Debian's `postgresql` package (its binaries are looked for in /usr/lib/postgresql/*/bin)"
        )
    })
}

/// Counts the rows of `table` in `db`, pending ones included (tests check
/// that a failure left nothing behind).
pub async fn count_rows(db: &crate::db::Database, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    let (n,): (i64,) = crate::on_pool!(db.pool(), pool => sqlx::query_as(&sql).fetch_one(pool).await.unwrap());
    n
}

/// Turns each `async fn NAME(backend: Backend)` listed into a module `NAME`
/// with two tests, `sqlite` and `postgres`, so every API test runs on both
/// databases.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::testing::Backend::Sqlite).await
                }

                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::testing::Backend::Postgres).await
                }
            }
        )*
    };
}
