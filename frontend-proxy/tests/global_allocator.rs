//! The binary's global allocator (`allocator.rs`), in a process of its own
//! with it as the global allocator: every layout gets its size and
//! alignment, bytes survive a reallocation, and a block takes no more than
//! its mimalloc size class.

use frontend_proxy::allocator::Mimalloc;
use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, Layout};

#[global_allocator]
static ALLOCATOR: Mimalloc = Mimalloc;

const SIZES: [usize; 19] = [1, 2, 3, 7, 8, 9, 15, 16, 17, 24, 48, 1000, 1024, 1025, 1280, 1536, 3000, 70_000, 5 << 20];
const ALIGNS: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 4096, 64 << 10];

/// Fills `len` bytes at `p` with a pattern of `seed`, then checks them.
fn fill(p: *mut u8, len: usize, seed: usize) {
    for i in 0..len {
        // SAFETY: the caller owns `len` bytes at `p`.
        unsafe { p.add(i).write((i ^ seed) as u8) }
    }
}

fn holds(p: *const u8, len: usize, seed: usize) -> bool {
    // SAFETY: the caller owns `len` initialized bytes at `p`.
    (0..len).all(|i| unsafe { p.add(i).read() } == (i ^ seed) as u8)
}

#[test]
fn every_layout_gets_its_size_and_alignment() {
    for &align in &ALIGNS {
        for &size in &SIZES {
            let layout = Layout::from_size_align(size, align).expect("layout");
            // Several blocks live at once: each freed block would come back
            // as the next, and every block of a size class must qualify.
            let live = if size > 70_000 { 2 } else { 16 };
            // SAFETY: a non-zero size; each block is freed with its layout.
            unsafe {
                let blocks: Vec<*mut u8> = (0..live).map(|_| alloc(layout)).collect();
                for (i, &p) in blocks.iter().enumerate() {
                    assert!(!p.is_null(), "{size} B aligned {align}: no block");
                    assert_eq!(p as usize % align, 0, "{size} B aligned {align}: block {i} at {p:p}");
                    assert!(libmimalloc_sys::mi_usable_size(p.cast()) >= size, "{size} B aligned {align}: too small");
                    fill(p, size, size + align + i);
                }
                for (i, &p) in blocks.iter().enumerate() {
                    assert!(holds(p, size, size + align + i), "{size} B aligned {align}: block {i} overwritten");
                    dealloc(p, layout);
                }

                let z = alloc_zeroed(layout);
                assert!(!z.is_null() && z as usize % align == 0, "{size} B aligned {align}: zeroed at {z:p}");
                assert!((0..size).all(|i| z.add(i).read() == 0), "{size} B aligned {align}: not zeroed");
                dealloc(z, layout);
            }
        }
    }
}

#[test]
fn a_reallocated_block_keeps_its_bytes_and_alignment() {
    for &align in &ALIGNS {
        // Up to 70,000 B: the 5 MiB block's bytes, copied 36 times over,
        // would only slow the test down.
        for &from in &SIZES[..SIZES.len() - 1] {
            for &to in &SIZES[..SIZES.len() - 1] {
                let layout = Layout::from_size_align(from, align).expect("layout");
                // SAFETY: non-zero sizes; `realloc` gets the block's own
                // layout and the result is freed with the new size.
                unsafe {
                    let p = alloc(layout);
                    assert!(!p.is_null());
                    fill(p, from, from ^ to);
                    let q = realloc(p, layout, to);
                    assert!(!q.is_null(), "{from} -> {to} B aligned {align}: no block");
                    assert_eq!(q as usize % align, 0, "{from} -> {to} B aligned {align}: at {q:p}");
                    assert!(holds(q, from.min(to), from ^ to), "{from} -> {to} B aligned {align}: bytes lost");
                    dealloc(q, Layout::from_size_align(to, align).expect("layout"));
                }
            }
        }
    }
}

/// The reason for our own `GlobalAlloc`: through `mi_malloc_aligned`, a
/// block over 1 KiB whose size class is not a power of two is taken `size
/// + align - 1` bytes large, often the next class (1,280 B: 1,536).
#[test]
fn a_block_takes_its_own_size_class_not_the_next() {
    for size in [1280, 1536, 1792, 2560, 3072] {
        let layout = Layout::from_size_align(size, 8).expect("layout");
        // SAFETY: a non-zero size, freed with its layout.
        unsafe {
            let p = alloc(layout);
            assert!(!p.is_null());
            assert_eq!(libmimalloc_sys::mi_usable_size(p.cast()), size, "{size} B took another class");
            dealloc(p, layout);
        }
    }
}
