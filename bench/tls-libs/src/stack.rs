//! The TLS layer of each build: an acceptor made from a certificate chain
//! and key (PEM files) with the library's server defaults as the proxy
//! would set them (OpenSSL, BoringSSL: `mozilla_intermediate_v5` and read
//! ahead, as `frontend-proxy/src/tls.rs`; rustls: `ServerConfig`'s
//! defaults as pingora-rustls builds it), and `accept`, which runs the
//! server handshake on a TCP connection.
//!
//! Session tickets: each library's own stateless tickets (its own key,
//! made at start) unless `stateless` is false; then resumption relies on
//! the library's session cache.

use std::io;
use tokio::net::TcpStream;

#[cfg(not(any(
    feature = "plain",
    feature = "openssl",
    feature = "boring",
    feature = "rustls-ring",
    feature = "rustls-aws"
)))]
compile_error!("build with one of the features plain, openssl, openssl-vendored, boring, rustls-ring, rustls-aws");

#[cfg_attr(feature = "plain", allow(dead_code))]
fn setup(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("TLS set-up: {e}"))
}

#[cfg(feature = "plain")]
pub use plain::*;
#[cfg(feature = "plain")]
mod plain {
    use super::*;
    pub const NAME: &str = "plain";
    pub struct Acceptor;
    impl Acceptor {
        pub fn new(_: &str, _: &str, _: bool) -> io::Result<Self> {
            Ok(Acceptor)
        }
        pub async fn accept(&self, tcp: TcpStream) -> io::Result<TcpStream> {
            Ok(tcp)
        }
    }
}

#[cfg(feature = "openssl")]
pub use ossl::*;
#[cfg(feature = "openssl")]
mod ossl {
    use super::*;
    use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod, SslOptions};
    use std::pin::Pin;
    use tokio_openssl::SslStream;

    pub const NAME: &str = "openssl";
    pub struct Acceptor(SslAcceptor);
    impl Acceptor {
        pub fn new(cert: &str, key: &str, stateless: bool) -> io::Result<Self> {
            eprintln!("{}", openssl::version::version());
            let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(setup)?;
            b.set_certificate_chain_file(cert).map_err(setup)?;
            b.set_private_key_file(key, SslFiletype::PEM).map_err(setup)?;
            b.check_private_key().map_err(setup)?;
            b.set_read_ahead(true);
            if !stateless {
                b.set_options(SslOptions::NO_TICKET);
            }
            Ok(Acceptor(b.build()))
        }
        pub async fn accept(&self, tcp: TcpStream) -> io::Result<SslStream<TcpStream>> {
            let ssl = Ssl::new(self.0.context()).map_err(setup)?;
            let mut s = SslStream::new(ssl, tcp).map_err(setup)?;
            Pin::new(&mut s).accept().await.map_err(io::Error::other)?;
            Ok(s)
        }
    }
}

#[cfg(feature = "boring")]
pub use bssl::*;
#[cfg(feature = "boring")]
mod bssl {
    use super::*;
    use boring::ssl::{SslAcceptor, SslFiletype, SslMethod, SslOptions};
    use tokio_boring::SslStream;

    pub const NAME: &str = "boringssl";
    pub struct Acceptor(SslAcceptor);
    impl Acceptor {
        pub fn new(cert: &str, key: &str, stateless: bool) -> io::Result<Self> {
            let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(setup)?;
            b.set_certificate_chain_file(cert).map_err(setup)?;
            b.set_private_key_file(key, SslFiletype::PEM).map_err(setup)?;
            b.check_private_key().map_err(setup)?;
            b.set_read_ahead(true);
            if !stateless {
                b.set_options(SslOptions::NO_TICKET);
            }
            Ok(Acceptor(b.build()))
        }
        pub async fn accept(&self, tcp: TcpStream) -> io::Result<SslStream<TcpStream>> {
            tokio_boring::accept(&self.0, tcp).await.map_err(|e| io::Error::other(e.to_string()))
        }
    }
}

#[cfg(any(feature = "rustls-ring", feature = "rustls-aws"))]
pub use rtls::*;
#[cfg(any(feature = "rustls-ring", feature = "rustls-aws"))]
mod rtls {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;
    use tokio_rustls::server::TlsStream;
    use tokio_rustls::TlsAcceptor;

    #[cfg(all(feature = "rustls-aws", not(feature = "rustls-ring")))]
    use rustls::crypto::aws_lc_rs as provider;
    #[cfg(feature = "rustls-ring")]
    use rustls::crypto::ring as provider;

    pub const NAME: &str = "rustls";
    pub struct Acceptor(TlsAcceptor);
    impl Acceptor {
        pub fn new(cert: &str, key: &str, stateless: bool) -> io::Result<Self> {
            let chain =
                CertificateDer::pem_file_iter(cert).map_err(setup)?.collect::<Result<Vec<_>, _>>().map_err(setup)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(setup)?;
            let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(setup)?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(setup)?;
            // rustls's default resumes from a 256-session cache (TLS 1.3
            // tickets that name a cached session); stateless tickets take
            // a ticketer, whose key rotates every 6 hours.
            if stateless {
                config.ticketer = provider::Ticketer::new().map_err(setup)?;
            }
            Ok(Acceptor(TlsAcceptor::from(Arc::new(config))))
        }
        pub async fn accept(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
            self.0.accept(tcp).await
        }
    }
}
