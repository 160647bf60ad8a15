//! Per-worker free lists of I/O buffers.
//!
//! A connection holds its read and write buffers only while it moves bytes:
//! it gives them back before waiting for a client's next request or for an
//! upstream's response, and takes them again once the socket is readable
//! (as HAProxy does with its buffer pool). An idle keep-alive connection
//! then costs no buffer memory, and the buffers in use are the few most
//! recently given back, still in the CPU's cache, instead of one set per
//! connection spread over megabytes.
//!
//! The lists are per thread (no lock) and last in, first out. Buffers that
//! read from clients and from upstreams are kept apart: a response buffer
//! grows to the body reads' size and is kept at that size, for the next
//! response, instead of being handed to a request and grown again.

use bytes::BytesMut;
use std::cell::RefCell;
use std::thread::LocalKey;

/// Size of a fresh buffer.
pub const BUF: usize = 4096;
/// Largest buffer kept for reading requests and for writing: one a large
/// head or an upload made grow is freed.
const KEEP_AT_MOST: usize = 4 * BUF;
/// Largest response buffer kept: a body read is up to 64 KiB.
const KEEP_RESPONSE_AT_MOST: usize = 128 * 1024;
/// Buffers kept per thread and kind; more are freed.
const MAX_FREE: usize = 64;

thread_local! {
    static FROM_CLIENTS: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static FROM_UPSTREAMS: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static WRITE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Which side a read buffer reads from.
#[derive(Clone, Copy)]
pub enum Source {
    Client,
    Upstream,
}

impl Source {
    fn keep_at_most(self) -> usize {
        match self {
            Source::Client => KEEP_AT_MOST,
            Source::Upstream => KEEP_RESPONSE_AT_MOST,
        }
    }

    fn list(self) -> &'static LocalKey<RefCell<Vec<BytesMut>>> {
        match self {
            Source::Client => &FROM_CLIENTS,
            Source::Upstream => &FROM_UPSTREAMS,
        }
    }
}

/// Makes sure `buf` has room to read into (1 KiB at least): a free buffer
/// from this thread's list, or a new one, if it has none.
pub fn take_read(buf: &mut BytesMut, from: Source) {
    if buf.capacity() == 0 {
        *buf = from.list().with(|free| free.borrow_mut().pop()).unwrap_or_else(|| BytesMut::with_capacity(BUF));
    }
    if buf.capacity() - buf.len() < 1024 {
        // Reclaims the space in front when nothing else holds it.
        buf.reserve(BUF);
    }
}

/// Gives `buf` back to this thread's list if it holds no unread bytes.
/// Leaves an empty buffer that owns no memory.
pub fn give_read(buf: &mut BytesMut, from: Source) {
    // (An empty buffer read to its end shows no capacity, but has memory.)
    if !buf.is_empty() {
        return;
    }
    let mut buf = std::mem::take(buf);
    // A buffer read from and advanced offers only the room behind what was
    // read: asking for one byte more than that takes back the room in
    // front, all of it, unless a part split off (a request head) still
    // holds the memory. Then the next read fills the whole buffer.
    let _ = buf.try_reclaim(buf.capacity() + 1);
    if buf.capacity() > 0 && buf.capacity() <= from.keep_at_most() {
        keep(from.list(), buf);
    }
}

/// An empty write buffer in `out`, from this thread's list if it had none.
pub fn take_write(out: &mut Vec<u8>) {
    if out.capacity() == 0 {
        *out = WRITE.with(|free| free.borrow_mut().pop()).unwrap_or_else(|| Vec::with_capacity(BUF));
    }
    out.clear();
}

/// Gives `out` (written already) back to this thread's list.
pub fn give_write(out: &mut Vec<u8>) {
    let out = std::mem::take(out);
    if out.capacity() > 0 && out.capacity() <= KEEP_AT_MOST {
        keep(&WRITE, out);
    }
}

/// Puts a buffer on `list` unless it is full (then the buffer is freed).
fn keep<T>(list: &'static LocalKey<RefCell<Vec<T>>>, buf: T) {
    list.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < MAX_FREE {
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_last_in_first_out() {
        let mut a = BytesMut::new();
        take_read(&mut a, Source::Client);
        assert!(a.capacity() >= BUF);
        let at = a.as_ptr();
        give_read(&mut a, Source::Client);
        assert_eq!(a.capacity(), 0, "the connection no longer holds it");
        let mut b = BytesMut::new();
        take_read(&mut b, Source::Client);
        assert_eq!(b.as_ptr(), at, "the buffer just given back is reused");
    }

    #[test]
    fn a_buffer_read_to_its_end_comes_back_whole() {
        use bytes::Buf;
        let mut a = BytesMut::new();
        take_read(&mut a, Source::Upstream);
        let (at, size) = (a.as_ptr(), a.capacity());
        a.extend_from_slice(&vec![b'x'; size]);
        a.advance(size);
        assert_eq!(a.capacity(), 0, "all read: no room shows");
        give_read(&mut a, Source::Upstream);
        let mut b = BytesMut::new();
        take_read(&mut b, Source::Upstream);
        assert_eq!((b.as_ptr(), b.capacity()), (at, size), "the same buffer, all of its room");
    }

    #[test]
    fn a_buffer_with_unread_bytes_is_kept() {
        let mut a = BytesMut::new();
        take_read(&mut a, Source::Client);
        a.extend_from_slice(b"GET / HTTP/1.1\r\n");
        give_read(&mut a, Source::Client);
        assert_eq!(&a[..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn grown_buffers_are_freed_not_kept() {
        let mut big = Vec::with_capacity(KEEP_AT_MOST * 2);
        give_write(&mut big);
        let mut out = Vec::new();
        take_write(&mut out);
        // Not its address: the allocator may well hand the freed block out
        // again (CI saw it); a kept buffer would still have its capacity.
        assert!(out.capacity() < KEEP_AT_MOST * 2, "the grown buffer was kept: {}", out.capacity());
        assert!(out.capacity() >= BUF && out.is_empty());
    }
}
