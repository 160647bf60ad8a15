//! The binary's global allocator: mimalloc, asked for alignment only
//! when a type needs more than mimalloc gives every block.
//!
//! The `mimalloc` crate's `MiMalloc` passes every allocation to
//! `mi_malloc_aligned`, whatever its alignment. In mimalloc 3 that call
//! takes the plain fast path only for blocks up to 1 KiB; anything larger
//! (a connection's or a stream's boxed future, h2's buffers, a header map's
//! storage) goes through the generic aligned path, and where the size class
//! is not a power of two, through the over-allocating one: `size +
//! align - 1` bytes, often the next size class (1,280 B asked, 1,536 B
//! taken). mimalloc already aligns every block of 16 bytes or more to 16
//! and every smaller one to 8 (its `MI_MAX_ALIGN_SIZE`, as glibc's malloc
//! does, and std's `System` allocator relies on the same rule), so a
//! layout whose alignment is at most 16 and at most its size goes to
//! `mi_malloc` / `mi_zalloc` / `mi_realloc`; only the rest to the aligned
//! calls. Every block is freed with `mi_free`, which takes both kinds.
#![allow(unsafe_code)]

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The alignment every mimalloc block of at least this many bytes has.
const MIN_ALIGN: usize = 16;

/// mimalloc, without the aligned calls where no alignment beyond its own
/// is asked for (see the module's documentation).
pub struct Mimalloc;

/// Whether mimalloc's plain calls already give `size` bytes the
/// alignment `align`.
#[inline]
fn plain(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

// SAFETY: every pointer handed out comes from mimalloc with at least the
// layout's size and alignment (the plain calls for the layouts `plain`
// admits, whose alignment mimalloc's blocks have; the aligned calls for
// the rest), and every pointer taken back goes to mimalloc, which frees
// and reallocates blocks of either kind.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's calls take any size and a power-of-two
        // alignment (a `Layout`'s is one).
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; mimalloc
        // keeps the contents up to the smaller size, and the block it
        // returns has the alignment asked for (a plain block of `new_size`
        // bytes has `layout.align()` when `plain` says so).
        unsafe {
            if plain(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}
