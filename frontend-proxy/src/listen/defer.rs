//! `TCP_DEFER_ACCEPT` on a listening socket: the kernel completes the
//! handshake but puts the connection in the accept queue only when its
//! first bytes arrive (or, for a client that sends nothing, once the
//! period has passed and it acknowledges a repeated SYN-ACK). Without it
//! each new connection wakes the worker twice, for the connection and then
//! for its request, and on loopback both wake-ups are paid on the client's
//! core. nginx's `listen ... deferred` and HAProxy's `defer-accept` set it.
//!
//! One of the crate's few `unsafe` modules (with `tls/session.rs`,
//! `tls/crl.rs` and `allocator.rs`): neither the standard library, socket2
//! nor tokio has a setter for this option.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// Sets `TCP_DEFER_ACCEPT` to `seconds` on a TCP socket.
pub fn set(socket: &impl AsRawFd, seconds: i32) -> std::io::Result<()> {
    let value: libc::c_int = seconds;
    // SAFETY: the descriptor is open for the borrow's lifetime, and the
    // option value is a c_int that outlives the call, passed with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
