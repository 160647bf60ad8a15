//! A slow, lossy link for one host, as `tc qdisc add dev eth0 root netem
//! delay 300ms loss 5%` would make it: the kernel this suite runs on (CI's
//! included) has no netem, so an iptables rule hands the host's outgoing
//! packets to an NFQUEUE and this thread gives each its verdict late:
//! accepted after the delay, or dropped at the loss rate. The packets are
//! real: TCP on both ends sees the added round trip, retransmits what was
//! lost, and times out connects whose SYN-ACK is late.

use nfq::{Queue, Verdict};
use rand::Rng;
use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The queue number the iptables rule names.
pub const QUEUE: u16 = 7;

#[derive(Default, Debug)]
pub struct LineStats {
    pub delayed: AtomicU64,
    pub dropped: AtomicU64,
}

pub struct DelayLine {
    stop: Arc<AtomicBool>,
    pub stats: Arc<LineStats>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl DelayLine {
    /// Starts serving `QUEUE` in the namespace `netns` (a `/run/netns` name).
    pub fn start(netns: &str, delay: Duration, loss: f64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LineStats::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let path = std::path::PathBuf::from("/run/netns").join(netns);
        let (s, st) = (stop.clone(), stats.clone());
        let thread = std::thread::spawn(move || {
            let f = std::fs::File::open(&path)?;
            rustix::thread::move_into_link_name_space(f.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))?;
            let mut q = Queue::open()?;
            q.bind(QUEUE)?;
            q.set_copy_range(QUEUE, 0)?; // verdicts need no payload
            q.set_nonblocking(true);
            let _ = tx.send(());
            serve(&mut q, delay, loss, &s, &st)
        });
        if rx.recv_timeout(Duration::from_secs(5)).is_err() {
            let e = thread.join().map(|r| r.err()).ok().flatten();
            panic!("delay line in {netns} did not start: {e:?}");
        }
        Self { stop, stats, thread: Some(thread) }
    }
}

fn serve(q: &mut Queue, delay: Duration, loss: f64, stop: &AtomicBool, stats: &LineStats) -> std::io::Result<()> {
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut rng = rand::thread_rng();
    while !stop.load(Ordering::SeqCst) {
        loop {
            match q.recv() {
                Ok(mut msg) if rng.gen_bool(loss) => {
                    msg.set_verdict(Verdict::Drop);
                    q.verdict(msg)?;
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Ok(msg) => held.push_back((Instant::now() + delay, msg)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        // One delay for all: the oldest is always due first.
        while held.front().is_some_and(|(due, _)| *due <= Instant::now()) {
            if let Some((_, mut msg)) = held.pop_front() {
                msg.set_verdict(Verdict::Accept);
                q.verdict(msg)?;
                stats.delayed.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for (_, mut msg) in held {
        msg.set_verdict(Verdict::Accept);
        q.verdict(msg)?;
    }
    q.unbind(QUEUE)
}

impl Drop for DelayLine {
    /// Lets every held packet go; remove the iptables rule first.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Err(e)) => eprintln!("delay line: {e}"),
                Err(_) => eprintln!("delay line panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}
