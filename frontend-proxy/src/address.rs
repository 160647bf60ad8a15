//! Addresses a listener listens on: an IP socket address, or Envoy's
//! `pipe` (a Unix domain socket). Below every module that names one (the
//! configuration, access logs, header formatters), so it imports nothing
//! of the crate.

use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;

/// Where a listener listens: `socket_address` (an IP and a port) or
/// `pipe` (a Unix domain socket). Cloning an IP address copies it; a pipe
/// is shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Ip(SocketAddr),
    Pipe(Arc<Pipe>),
}

/// Envoy's `Pipe`: a Unix domain socket at `path`, in Linux's abstract
/// namespace when the path starts with `@`.
#[derive(Debug, PartialEq, Eq)]
pub struct Pipe {
    /// As the file has it (Envoy's name for the address, `@name` for an
    /// abstract one).
    pub path: String,
    /// Permissions the socket file gets after bind (0: left as the umask
    /// made them, as in Envoy).
    pub mode: u32,
}

impl Pipe {
    /// Linux's abstract namespace: no file, the name is `path` after its `@`.
    pub fn is_abstract(&self) -> bool {
        self.path.starts_with('@')
    }

    /// The address to bind or connect: the path, or for an abstract name
    /// a NUL byte in place of its `@`.
    pub fn sockaddr(&self) -> std::io::Result<socket2::SockAddr> {
        if self.is_abstract() {
            let mut name = self.path.clone().into_bytes();
            name[0] = 0;
            socket2::SockAddr::unix(std::ffi::OsString::from_vec(name))
        } else {
            socket2::SockAddr::unix(&self.path)
        }
    }

    /// The address as the standard library names a Unix socket's.
    pub fn std_addr(&self) -> std::io::Result<std::os::unix::net::SocketAddr> {
        use std::os::linux::net::SocketAddrExt;
        match self.path.strip_prefix('@') {
            Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name),
            None => std::os::unix::net::SocketAddr::from_pathname(&self.path),
        }
    }

    /// Whether `addr` is this pipe's.
    pub fn is(&self, addr: &std::os::unix::net::SocketAddr) -> bool {
        use std::os::linux::net::SocketAddrExt;
        match self.path.strip_prefix('@') {
            Some(name) => addr.as_abstract_name() == Some(name.as_bytes()),
            None => addr.as_pathname() == Some(std::path::Path::new(&self.path)),
        }
    }
}

impl Address {
    /// The IP address, `None` for a pipe.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            Address::Ip(a) => Some(*a),
            Address::Pipe(_) => None,
        }
    }

    /// The port, 0 for a pipe.
    pub fn port(&self) -> u16 {
        match self {
            Address::Ip(a) => a.port(),
            Address::Pipe(_) => 0,
        }
    }

    pub fn pipe(&self) -> Option<&Pipe> {
        match self {
            Address::Pipe(p) => Some(p),
            Address::Ip(_) => None,
        }
    }
}

/// Envoy's `asString()`: `ip:port`, or the pipe's path.
impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Ip(a) => a.fmt(f),
            Address::Pipe(p) => f.write_str(&p.path),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Ip(a)
    }
}
