//! Addresses a listener listens on or an upstream host is at: an IP socket
//! address, or Envoy's `pipe` (a Unix domain socket), and how an upstream
//! pipe is connected (ours and Pingora's way). Below every module that
//! names one (the configuration, upstream hosts, access logs, header
//! formatters), so it imports nothing of the crate.

use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;

/// Where a listener listens or a host is: `socket_address` (an IP and a
/// port) or `pipe` (a Unix domain socket). Cloning an IP address copies it; a pipe
/// is shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    Ip(SocketAddr),
    Pipe(Arc<Pipe>),
}

/// Envoy's `Pipe`: a Unix domain socket at `path`, in Linux's abstract
/// namespace when the path starts with `@`.
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// A connection to the pipe, for an upstream. Non-blocking: a Unix
    /// socket connects at once or fails (`EAGAIN` when the listener's
    /// backlog is full), as Envoy's connect does. Called in a runtime.
    pub fn connect(&self) -> std::io::Result<tokio::net::UnixStream> {
        let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        socket.connect(&self.sockaddr()?)?;
        tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(socket))
    }

    /// The pipe as Pingora names an address. An abstract pipe goes in as
    /// the pathname `@name` (Pingora cannot hash or compare abstract
    /// addresses): it is a key only, [`Pipe::connect`] opens the socket.
    pub fn pingora_addr(&self) -> std::io::Result<pingora_core::protocols::l4::socket::SocketAddr> {
        let addr = std::os::unix::net::SocketAddr::from_pathname(&self.path)?;
        Ok(pingora_core::protocols::l4::socket::SocketAddr::Unix(addr))
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

/// Pingora's connector for pipe peers (`PeerOptions::custom_l4`): Pingora
/// connects to a path only, and panics on an abstract name, which
/// [`Pipe::pingora_addr`] spells `@name` and this connector reads back.
#[derive(Debug, Default)]
pub struct PipeConnector;

#[async_trait::async_trait]
impl pingora_core::connectors::L4Connect for PipeConnector {
    async fn connect(
        &self,
        addr: &pingora_core::protocols::l4::socket::SocketAddr,
    ) -> pingora_error::Result<pingora_core::protocols::l4::stream::Stream> {
        use pingora_error::{Error, ErrorType};
        let Some(path) = addr.as_unix().and_then(|a| a.as_pathname()).and_then(|p| p.to_str()) else {
            return Error::e_explain(ErrorType::ConnectError, format!("{addr} is not a pipe"));
        };
        let pipe = Pipe { path: path.to_string(), mode: 0 };
        match pipe.connect() {
            Ok(s) => Ok(s.into()),
            Err(e) => {
                let etype = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
                    _ => ErrorType::ConnectError,
                };
                Error::e_because(etype, format!("Fail to connect to {path}"), e)
            }
        }
    }
}
