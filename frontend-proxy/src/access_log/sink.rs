//! Where access-log lines go: one [`Sink`] per distinct path, each with a
//! writer thread behind a bounded channel. The request path only copies
//! its line into the channel; when the channel is full the line is
//! dropped and counted, never waited for. The writer buffers and flushes
//! once a second (Envoy's `access_log_flush_interval`) and when asked to
//! ([`Sinks::flush_all`], at shutdown). After [`Sinks::reopen_all`]
//! (SIGUSR1, for log rotation, as Envoy) each writer writes out what it
//! holds to the file it has open, then opens its path afresh before the
//! next line, within a flush interval.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Lines a sink holds for its writer before it drops new ones.
const QUEUE: usize = 16 * 1024;
/// How often buffered lines reach the file (Envoy's default).
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a flush at shutdown waits for the writer.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

enum Message {
    Line(Box<str>),
    /// Flush, then answer.
    Flush(SyncSender<()>),
}

/// An open access-log destination.
pub struct Sink {
    path: String,
    queue: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
    /// Set by [`Sink::reopen`]; the writer takes it.
    reopen: Arc<AtomicBool>,
}

impl Sink {
    /// Opens `path` for appending (`/dev/stdout` and `/dev/stderr` are the
    /// process's own streams) and starts its writer.
    pub fn open(path: &str) -> io::Result<Self> {
        let out = open_path(path)?;
        let (queue, lines) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            path: path.to_string(),
            out: BufWriter::with_capacity(64 * 1024, out),
            dropped: dropped.clone(),
            reopen: reopen.clone(),
        };
        std::thread::Builder::new().name("access-log".into()).spawn(move || writer.run(lines))?;
        Ok(Self { path: path.to_string(), queue, dropped, reopen })
    }

    /// Asks the writer to open its path again (the file was rotated).
    pub fn reopen(&self) {
        self.reopen.store(true, Relaxed);
    }

    /// Queues a line; drops (and counts) it if the writer is behind.
    pub fn write(&self, line: &str) {
        match self.queue.try_send(Message::Line(line.into())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Lines dropped because the writer was behind (or gone).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Writes out everything queued so far; waits a little for the writer.
    pub fn flush(&self) {
        let (done, wait) = sync_channel(1);
        if self.queue.send(Message::Flush(done)).is_ok() && wait.recv_timeout(FLUSH_WAIT).is_err() {
            warn!(path = %self.path, "access log writer did not flush in time");
        }
    }
}

/// The destination `path` names: the process's own stream for
/// `/dev/stdout` and `/dev/stderr`, else the file, appended to.
fn open_path(path: &str) -> io::Result<Box<dyn Write + Send>> {
    Ok(match path {
        "/dev/stdout" => Box::new(io::stdout()),
        "/dev/stderr" => Box::new(io::stderr()),
        _ => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
    })
}

struct Writer {
    path: String,
    out: BufWriter<Box<dyn Write + Send>>,
    dropped: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, lines: Receiver<Message>) {
        let mut dirty = false;
        let mut next_flush = Instant::now() + FLUSH_INTERVAL;
        let mut reported = 0;
        loop {
            let wait = next_flush.saturating_duration_since(Instant::now());
            let message = lines.recv_timeout(wait);
            if self.reopen.swap(false, Relaxed) {
                self.reopen_file();
                dirty = false;
            }
            match message {
                Ok(Message::Line(line)) => {
                    if let Err(e) = self.out.write_all(line.as_bytes()) {
                        warn!(path = %self.path, error = %e, "access log write failed");
                    }
                    dirty = true;
                }
                Ok(Message::Flush(done)) => {
                    self.flush();
                    dirty = false;
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
            }
            let now = Instant::now();
            if now >= next_flush {
                if dirty {
                    self.flush();
                    dirty = false;
                }
                let dropped = self.dropped.load(Relaxed);
                if dropped > reported {
                    warn!(path = %self.path, dropped = dropped - reported, "access log lines dropped: the writer fell behind");
                    reported = dropped;
                }
                next_flush = now + FLUSH_INTERVAL;
            }
        }
    }

    /// Writes out what the old file is owed, then opens the path afresh.
    /// If it cannot be opened, lines keep going to the old file.
    fn reopen_file(&mut self) {
        self.flush();
        if matches!(self.path.as_str(), "/dev/stdout" | "/dev/stderr") {
            return;
        }
        match open_path(&self.path) {
            Ok(out) => {
                self.out = BufWriter::with_capacity(64 * 1024, out);
                info!(path = %self.path, "access log reopened");
            }
            Err(e) => warn!(path = %self.path, error = %e, "access log could not be reopened; writing to the old file"),
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            warn!(path = %self.path, error = %e, "access log flush failed");
        }
    }
}

/// The open sinks, one per path, shared by every logger that names it.
#[derive(Default)]
pub struct Sinks(HashMap<String, Arc<Sink>>);

impl Sinks {
    /// The sink for `path`, opened on first use.
    pub fn open(&mut self, path: &str) -> io::Result<Arc<Sink>> {
        if let Some(s) = self.0.get(path) {
            return Ok(s.clone());
        }
        let sink = Arc::new(Sink::open(path)?);
        self.0.insert(path.to_string(), sink.clone());
        Ok(sink)
    }

    /// Asks every sink to reopen its file (SIGUSR1).
    pub fn reopen_all(&self) {
        for s in self.0.values() {
            s.reopen();
        }
    }

    /// Every open sink, for a task that outlives this set's owner's borrow.
    pub fn all(&self) -> Vec<Arc<Sink>> {
        self.0.values().cloned().collect()
    }

    /// Flushes every sink (at shutdown).
    pub fn flush_all(&self) {
        for s in self.0.values() {
            s.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_on_flush_and_paths_share_a_sink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let path = path.to_str().unwrap();
        std::fs::write(path, "earlier\n").unwrap();
        let mut sinks = Sinks::default();
        let a = sinks.open(path).unwrap();
        let b = sinks.open(path).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        a.write("one\n");
        b.write("two\n");
        sinks.flush_all();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "earlier\none\ntwo\n");
        assert_eq!(a.dropped(), 0);
    }

    #[test]
    fn lines_reach_the_file_within_the_flush_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timed.log");
        let sink = Sink::open(path.to_str().unwrap()).unwrap();
        sink.write("line\n");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&path).unwrap_or_default().is_empty() {
            assert!(Instant::now() < deadline, "not flushed within 5 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line\n");
    }

    #[test]
    fn reopen_moves_later_lines_to_a_new_file_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rotated.log");
        let mut sinks = Sinks::default();
        let sink = sinks.open(path.to_str().unwrap()).unwrap();
        sink.write("old\n");
        sinks.flush_all();
        let moved = dir.path().join("rotated.log.1");
        std::fs::rename(&path, &moved).unwrap();
        sinks.reopen_all();
        sink.write("new\n");
        sinks.flush_all();
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), "old\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
    }

    #[test]
    fn an_unopenable_path_is_an_error() {
        assert!(Sink::open("/nonexistent-dir/access.log").is_err());
    }
}
