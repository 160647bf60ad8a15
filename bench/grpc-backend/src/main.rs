//! The gRPC backend of bench/bench.py's scenario (k): `bench.Echo/Unary`
//! answers each message with itself and grpc-status 0, served over h2c by
//! tonic on one thread (as the nginx backend of the other scenarios runs
//! one worker).
//!
//!     grpc-backend PORT STATS_PORT
//!
//! h2load counts HTTP statuses only, and a failed gRPC call is an HTTP 200
//! whose grpc-status says otherwise; so the backend counts the calls it
//! answered with status 0 and those it did not, and every connection to
//! STATS_PORT reads `ok N failed M` (cumulative). The harness compares
//! them with h2load's count around each run.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio_stream::StreamExt;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

/// The message of the bench's request (bench.py writes it by hand:
/// `text: "bench", n: 1`).
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    n: u32,
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

struct EchoUnary;
impl UnaryService<Msg> for EchoUnary {
    type Response = Msg;
    type Future = BoxFuture<Result<Response<Msg>, Status>>;
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        Box::pin(async move { Ok(Response::new(req.into_inner())) })
    }
}

#[derive(Clone)]
struct Echo(Arc<Counts>);

impl Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let counts = self.0.clone();
        Box::pin(async move {
            let resp = if req.uri().path() == "/bench.Echo/Unary" {
                Grpc::new(ProstCodec::<Msg, Msg>::default()).unary(EchoUnary, req).await
            } else {
                Status::unimplemented("no such method").into_http()
            };
            // tonic puts an error status in the response head (a
            // trailers-only response); a unary call that succeeded has no
            // grpc-status there and ends with grpc-status 0 in its trailers.
            match resp.headers().get("grpc-status") {
                Some(s) if s != "0" => counts.failed.fetch_add(1, Ordering::Relaxed),
                _ => counts.ok.fetch_add(1, Ordering::Relaxed),
            };
            Ok(resp)
        })
    }
}

impl NamedService for Echo {
    const NAME: &'static str = "bench.Echo";
}

fn port_arg(args: &[String], i: usize) -> u16 {
    match args.get(i).and_then(|a| a.parse().ok()) {
        Some(p) => p,
        None => {
            eprintln!("usage: grpc-backend PORT STATS_PORT");
            std::process::exit(2);
        }
    }
}

fn serve_stats(listener: std::net::TcpListener, counts: Arc<Counts>) {
    for conn in listener.incoming().flatten() {
        let line =
            format!("ok {} failed {}\n", counts.ok.load(Ordering::Relaxed), counts.failed.load(Ordering::Relaxed));
        let mut conn = conn;
        let _ = conn.write_all(line.as_bytes());
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (port, stats_port) = (port_arg(&args, 1), port_arg(&args, 2));
    let counts = Arc::new(Counts::default());
    let stats = std::net::TcpListener::bind(("127.0.0.1", stats_port))?;
    let c = counts.clone();
    std::thread::spawn(move || serve_stats(stats, c));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    // TCP_NODELAY, as gRPC servers set it (grpc-go, grpc C++; tonic only
    // when it binds the socket itself): without it, a connection carrying
    // many concurrent streams stalls on Nagle's algorithm against the
    // peer's delayed ACKs (~40 ms a round), and the bench would measure
    // how many upstream connections a proxy spreads its streams over.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        if let Ok(conn) = &conn {
            let _ = conn.set_nodelay(true);
        }
        conn
    });
    tonic::transport::Server::builder().add_service(Echo(counts)).serve_with_incoming(incoming).await?;
    Ok(())
}
