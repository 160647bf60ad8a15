//! A quiet worker gives back what it freed (`listen/allocator.rs`), in a
//! process of its own with the binary's allocator: mimalloc keeps memory a
//! burst freed resident until something calls into it again, and the
//! worker's collection is that call. Alone in its test binary: any other
//! test allocating beside it (`cargo test` runs them as threads of one
//! process) is such a call (the allocator's own tests: `global_allocator.rs`).

use frontend_proxy::allocator::Mimalloc;
use frontend_proxy::drain::Drain;
use frontend_proxy::listen::allocator::collect_while_serving;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: Mimalloc = Mimalloc;

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS in kB")
}

/// A burst the size of 4000 HTTP/2 connections' frame buffers: 16 KiB
/// blocks, written so that their pages are resident.
const BLOCKS: usize = 4000;
const BLOCK: usize = 16 * 1024;
const BURST_KIB: u64 = (BLOCKS * BLOCK / 1024) as u64;

#[test]
fn a_quiet_worker_gives_back_what_a_burst_freed() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let before = rss_kib();
        let blocks: Vec<Vec<u8>> = (0..BLOCKS).map(|i| vec![i as u8; BLOCK]).collect();
        let peak = rss_kib();
        assert!(peak >= before + BURST_KIB * 9 / 10, "the burst is resident: {before} -> {peak} KiB");
        drop(blocks);

        // Without a call into the allocator, what the burst freed stays:
        // longer than mimalloc's purge delay (1 s), nothing allocating.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let quiet = rss_kib();
        assert!(
            quiet + BURST_KIB / 2 > peak,
            "mimalloc gave the burst back on its own ({peak} -> {quiet} KiB): the worker's collection is not needed"
        );

        // The worker's collection gives it back within a few seconds.
        let drain = Drain::new(Duration::from_secs(1));
        let collecting = tokio::spawn(collect_while_serving(drain.clone()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut now = rss_kib();
        while now + BURST_KIB * 3 / 4 > peak && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            now = rss_kib();
        }
        assert!(
            now + BURST_KIB * 3 / 4 <= peak,
            "the burst is still resident after 10 s of collection: {peak} -> {now} KiB"
        );

        // And the collection ends with the drain.
        drain.start("test");
        tokio::time::timeout(Duration::from_secs(2), collecting)
            .await
            .expect("the collection ends when the drain starts")
            .expect("the collection task");
    });
}
