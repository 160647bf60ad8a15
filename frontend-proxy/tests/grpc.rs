//! gRPC through the proxy, end to end, with a real gRPC server and client
//! (tonic): the four kinds of call over downstream h2c and upstream h2c,
//! statuses and trailers passed through intact, streams that flow both
//! ways without buffering, a server that dies mid-stream, and the proxy's
//! own answers to gRPC requests written as gRPC statuses (Envoy's
//! `Grpc::Utility::httpToGrpcStatus`). Also the cluster protocol options
//! outside gRPC: a plain h2c upstream behind an HTTP/1.1 client, h2 over
//! TLS by ALPN, the client's version upstream, the idle timeout of pooled
//! connections, and the `upstream_cx_http{1,2}_total` stats.
//! Addresses: 127.0.40.x.

#[allow(unused_imports)]
mod support;

use bytes::Bytes;
use http::uri::PathAndQuery;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use support::{client, eventually, free_addr, ip, stat, yaml, ProxyProcess, LIMIT};
use tokio_stream::{Stream, StreamExt};
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::server::{
    ClientStreamingService, Grpc, NamedService, ServerStreamingService, StreamingService, UnaryService,
};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// The one message every method takes and returns.
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    n: u32,
}

fn msg(text: &str, n: u32) -> Msg {
    Msg { text: text.into(), n }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

/// What the test server saw, shared with the test.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    /// Streams parked by a "die" call, waiting for the server to be killed.
    dying: AtomicUsize,
    /// The last request's `te` (gRPC servers may insist on `trailers`).
    te: std::sync::Mutex<Option<String>>,
}

/// `test.Echo`: `Unary` (echo; "fail" answers an error status, "slow"
/// sleeps), `Count` (server streaming: `n` messages; "die": two, then
/// nothing; "tick": `n` messages 300 ms apart), `Sum` (client streaming: the texts joined, the numbers
/// added), `Chat` (bidi: each message echoed as it arrives).
#[derive(Clone)]
struct Echo(Arc<Seen>);

struct UnarySvc;
impl UnaryService<Msg> for UnarySvc {
    type Response = Msg;
    type Future = BoxFuture<Result<Response<Msg>, Status>>;
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let m = req.into_inner();
            match m.text.as_str() {
                "fail" => {
                    let mut s = Status::new(Code::FailedPrecondition, "the thing is ünhappy: 50% done");
                    s.metadata_mut().insert("x-detail", "kept".parse().unwrap());
                    Err(s)
                }
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(Response::new(m))
                }
                _ => Ok(Response::new(msg(&format!("echo: {}", m.text), m.n))),
            }
        })
    }
}

struct CountSvc(Arc<Seen>);
impl ServerStreamingService<Msg> for CountSvc {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = BoxFuture<Result<Response<MsgStream>, Status>>;
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        let seen = self.0.clone();
        Box::pin(async move {
            let m = req.into_inner();
            let stream: MsgStream = if m.text == "die" {
                seen.dying.fetch_add(1, Ordering::SeqCst);
                let two = tokio_stream::iter(vec![Ok(msg("a", 0)), Ok(msg("b", 1))]);
                Box::pin(two.chain(tokio_stream::pending()))
            } else if m.text == "tick" {
                Box::pin(tokio_stream::iter(0..m.n).then(|i| async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(msg("tick", i))
                }))
            } else {
                Box::pin(tokio_stream::iter((0..m.n).map(move |i| Ok(msg(&m.text, i)))))
            };
            Ok(Response::new(stream))
        })
    }
}

struct SumSvc;
impl ClientStreamingService<Msg> for SumSvc {
    type Response = Msg;
    type Future = BoxFuture<Result<Response<Msg>, Status>>;
    fn call(&mut self, req: Request<Streaming<Msg>>) -> Self::Future {
        Box::pin(async move {
            let mut stream = req.into_inner();
            let (mut text, mut n) = (String::new(), 0);
            while let Some(m) = stream.message().await? {
                text.push_str(&m.text);
                n += m.n;
            }
            // A long sum is told by its length (past a client's 4 MiB limit otherwise).
            let text = if text.len() > 1024 { format!("{} bytes", text.len()) } else { text };
            Ok(Response::new(msg(&text, n)))
        })
    }
}

struct ChatSvc;
impl StreamingService<Msg> for ChatSvc {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = BoxFuture<Result<Response<MsgStream>, Status>>;
    fn call(&mut self, req: Request<Streaming<Msg>>) -> Self::Future {
        Box::pin(async move {
            let stream = req.into_inner().map(|m| m.map(|m| msg(&format!("re: {}", m.text), m.n + 1)));
            Ok(Response::new(Box::pin(stream) as MsgStream))
        })
    }
}

impl Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let seen = self.0.clone();
        seen.calls.fetch_add(1, Ordering::SeqCst);
        *seen.te.lock().unwrap() = req.headers().get("te").and_then(|v| v.to_str().ok()).map(String::from);
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<Msg, Msg>::default());
            Ok(match req.uri().path() {
                "/test.Echo/Unary" => grpc.unary(UnarySvc, req).await,
                "/test.Echo/Count" => grpc.server_streaming(CountSvc(seen), req).await,
                "/test.Echo/Sum" => grpc.client_streaming(SumSvc, req).await,
                "/test.Echo/Chat" => grpc.streaming(ChatSvc, req).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

impl NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

/// A tonic server on its own runtime and thread, so that killing it drops
/// every connection at once, as a crashed process would.
struct GrpcServer {
    addr: SocketAddr,
    seen: Arc<Seen>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GrpcServer {
    fn start(host: u8) -> Self {
        let listener = std::net::TcpListener::bind((ip(40, host), 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let service = Echo(seen.clone());
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            rt.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
            });
            // Until killed (or dropped): then every task and socket goes.
            let _ = stopped.recv();
            rt.shutdown_background();
        });
        Self { addr, seen, stop: Some(stop), thread: Some(thread) }
    }

    fn kill(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.kill();
    }
}

const H2_OPTIONS: &str = r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: { max_concurrent_streams: 100 }"#;

/// The proxy in front of `server`: `/test.Echo/` to it, `/test.Slow/` to it
/// with a 300 ms route timeout, `/test.Empty/` to a cluster without hosts,
/// `/test.Dead/` to a port nobody listens on, `/test.Deadline/` to it
/// under the request's `grpc-timeout` less 1.7 s; nothing else routes.
async fn proxy_for(server: SocketAddr, host: u8) -> (ProxyProcess, SocketAddr, SocketAddr) {
    let listen = free_addr(ip(40, host));
    let admin = free_addr(ip(40, host));
    let dead = free_addr(ip(40, host));
    let routes = [
        ("/test.Echo/", "cluster: grpc"),
        ("/test.Slow/", "cluster: grpc, timeout: 0.3s, prefix_rewrite: \"/test.Echo/\""),
        ("/test.Empty/", "cluster: empty"),
        ("/test.Dead/", "cluster: dead"),
        (
            "/test.Deadline/",
            "cluster: grpc, timeout: 30s, prefix_rewrite: \"/test.Echo/\", \
             max_stream_duration: { grpc_timeout_header_max: 0s, grpc_timeout_header_offset: 1.7s }",
        ),
    ];
    let config = yaml::bootstrap_with_admin(
        admin,
        &[yaml::route_listener(listen, "grpc", &routes)],
        &[
            yaml::cluster("grpc", "STATIC", &[(server.ip().to_string(), server.port())], H2_OPTIONS),
            yaml::cluster("empty", "STATIC", &[], H2_OPTIONS),
            yaml::cluster("dead", "STATIC", &[(dead.ip().to_string(), dead.port())], H2_OPTIONS),
        ],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    (proxy, listen, admin)
}

/// A gRPC client to the proxy over h2c (prior knowledge, as gRPC does).
async fn grpc_client(proxy: SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{proxy}")).unwrap().connect().await.unwrap();
    tonic::client::Grpc::new(channel)
}

fn codec() -> ProstCodec<Msg, Msg> {
    ProstCodec::default()
}

async fn unary(
    client: &mut tonic::client::Grpc<tonic::transport::Channel>,
    path: &'static str,
    m: Msg,
) -> Result<Msg, Status> {
    client.ready().await.unwrap();
    client.unary(Request::new(m), PathAndQuery::from_static(path), codec()).await.map(Response::into_inner)
}

#[tokio::test]
async fn the_four_kinds_of_call_pass_through() {
    let server = GrpcServer::start(1);
    let (proxy, listen, admin) = proxy_for(server.addr, 1).await;
    let mut c = grpc_client(listen).await;
    tokio::time::timeout(LIMIT, async {
        // Unary.
        let reply = unary(&mut c, "/test.Echo/Unary", msg("hi", 7)).await.unwrap();
        assert_eq!(reply, msg("echo: hi", 7));

        // Server streaming: every message, then the OK status in trailers.
        c.ready().await.unwrap();
        let mut stream = c
            .server_streaming(Request::new(msg("x", 5)), PathAndQuery::from_static("/test.Echo/Count"), codec())
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(m) = stream.message().await.unwrap() {
            got.push(m.n);
        }
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert!(stream.trailers().await.unwrap().is_some(), "the OK status arrives in trailers");

        // Client streaming.
        c.ready().await.unwrap();
        let parts = tokio_stream::iter(vec![msg("a", 1), msg("b", 2), msg("c", 3)]);
        let sum = c
            .client_streaming(Request::new(parts), PathAndQuery::from_static("/test.Echo/Sum"), codec())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(sum, msg("abc", 6));

        // Bidi, in lock step: the next message goes only once the reply to
        // the last one came back, which a proxy that buffered either
        // direction would never let happen.
        let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
        c.ready().await.unwrap();
        let mut replies = c
            .streaming(
                Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
                PathAndQuery::from_static("/test.Echo/Chat"),
                codec(),
            )
            .await
            .unwrap()
            .into_inner();
        for i in 0..5 {
            tx.send(msg(&format!("m{i}"), i)).await.unwrap();
            let reply = replies.message().await.unwrap().expect("a reply per message");
            assert_eq!(reply, msg(&format!("re: m{i}"), i + 1));
        }
        drop(tx);
        assert!(replies.message().await.unwrap().is_none());
    })
    .await
    .expect("calls finish");
    assert_eq!(server.seen.calls.load(Ordering::SeqCst), 4);
    assert_eq!(server.seen.te.lock().unwrap().as_deref(), Some("trailers"), "`te: trailers` goes upstream");
    // Four streams on one upstream HTTP/2 connection, counted as Envoy names them.
    assert_eq!(stat(admin, "cluster.grpc.upstream_cx_http2_total").await, 1, "{}", proxy.log());
    assert_eq!(stat(admin, "cluster.grpc.upstream_rq_total").await, 4);
    assert_eq!(stat(admin, "cluster.grpc.upstream_rq_200").await, 4);
}

#[tokio::test]
async fn large_messages_flow_both_ways() {
    // Several times the HTTP/2 default window (64 KiB) each way, so flow
    // control has to be released on both legs.
    let server = GrpcServer::start(10);
    let (_proxy, listen, _admin) = proxy_for(server.addr, 10).await;
    let mut c = grpc_client(listen).await;
    let big = "x".repeat(3 << 20);
    let reply = tokio::time::timeout(LIMIT, unary(&mut c, "/test.Echo/Unary", msg(&big, 1))).await.unwrap().unwrap();
    assert_eq!(reply.text.len(), big.len() + "echo: ".len());
    c.ready().await.unwrap();
    let parts = tokio_stream::iter((0..8).map(|i| msg(&"y".repeat(1 << 20), i)));
    let sum = tokio::time::timeout(
        LIMIT,
        c.client_streaming(Request::new(parts), PathAndQuery::from_static("/test.Echo/Sum"), codec()),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner();
    assert_eq!(sum, msg(&format!("{} bytes", 8 << 20), 28));
}

#[tokio::test]
async fn an_error_status_arrives_intact() {
    let server = GrpcServer::start(2);
    let (_proxy, listen, _admin) = proxy_for(server.addr, 2).await;
    let mut c = grpc_client(listen).await;
    let status =
        tokio::time::timeout(LIMIT, unary(&mut c, "/test.Echo/Unary", msg("fail", 0))).await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "the thing is ünhappy: 50% done");
    assert_eq!(status.metadata().get("x-detail").unwrap(), "kept");
}

#[tokio::test]
async fn a_server_dying_mid_stream_ends_the_call_with_an_error() {
    let mut server = GrpcServer::start(3);
    let (_proxy, listen, _admin) = proxy_for(server.addr, 3).await;
    let mut c = grpc_client(listen).await;
    c.ready().await.unwrap();
    let mut stream = tokio::time::timeout(
        LIMIT,
        c.server_streaming(Request::new(msg("die", 0)), PathAndQuery::from_static("/test.Echo/Count"), codec()),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().text, "a");
    assert_eq!(stream.message().await.unwrap().unwrap().text, "b");
    server.kill();
    let end = tokio::time::timeout(LIMIT, stream.message()).await.expect("an error, not a hang");
    assert!(end.is_err(), "the call fails: {end:?}");
}

#[tokio::test]
async fn the_stream_idle_timeout_restarts_with_each_message_and_cuts_a_stalled_stream() {
    let server = GrpcServer::start(12);
    let (listen, admin) = (free_addr(ip(40, 12)), free_addr(ip(40, 12)));
    let hcm = yaml::hcm("idle", "          stream_idle_timeout: 1s", &yaml::routes(&[("/", "cluster: grpc")]));
    let config = yaml::bootstrap_with_admin(
        admin,
        &[yaml::listener("idle_listener", listen, &hcm)],
        &[yaml::cluster("grpc", "STATIC", &[(server.addr.ip().to_string(), server.addr.port())], H2_OPTIONS)],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    let mut c = grpc_client(listen).await;
    // Five messages 300 ms apart: 1.5 s in all, never 1 s of silence. A
    // timer left where the first message put it would cut the stream.
    c.ready().await.unwrap();
    let req = Request::new(msg("tick", 5));
    let call = c.server_streaming(req, PathAndQuery::from_static("/test.Echo/Count"), codec());
    let ticks: Vec<u32> = tokio::time::timeout(LIMIT, async {
        let mut stream = call.await.unwrap().into_inner();
        let mut seen = Vec::new();
        while let Some(m) = stream.message().await.unwrap() {
            seen.push(m.n);
        }
        seen
    })
    .await
    .expect("the stream ends");
    assert_eq!(ticks, (0..5).collect::<Vec<_>>(), "{}", proxy.log());
    assert_eq!(stat(admin, "http.idle.downstream_rq_idle_timeout").await, 0);
    // Two messages, then nothing: cut 1 s after the last one moved (timed
    // here from when the client has it, a little later).
    c.ready().await.unwrap();
    let req = Request::new(msg("die", 0));
    let mut stream =
        c.server_streaming(req, PathAndQuery::from_static("/test.Echo/Count"), codec()).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().text, "a");
    assert_eq!(stream.message().await.unwrap().unwrap().text, "b");
    let stalled = std::time::Instant::now();
    let end = tokio::time::timeout(LIMIT, stream.message()).await.expect("cut, not left hanging");
    assert!(end.is_err(), "the call fails: {end:?}");
    let after = stalled.elapsed();
    assert!(after >= Duration::from_millis(500) && after < Duration::from_secs(4), "cut after {after:?}");
    assert_eq!(stat(admin, "http.idle.downstream_rq_idle_timeout").await, 1, "{}", proxy.log());
}

#[tokio::test]
async fn local_replies_to_grpc_are_grpc_statuses() {
    let server = GrpcServer::start(4);
    let (_proxy, listen, admin) = proxy_for(server.addr, 4).await;
    let mut c = grpc_client(listen).await;
    tokio::time::timeout(LIMIT, async {
        // No host at all: 503 in HTTP, UNAVAILABLE in gRPC.
        let s = unary(&mut c, "/test.Empty/Unary", msg("x", 0)).await.unwrap_err();
        assert_eq!((s.code(), s.message()), (Code::Unavailable, "no healthy upstream"));
        // Connect failure.
        let s = unary(&mut c, "/test.Dead/Unary", msg("x", 0)).await.unwrap_err();
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("reset reason: connection failure"), "{}", s.message());
        // The route timeout: 504, which Envoy maps to UNAVAILABLE too.
        let s = unary(&mut c, "/test.Slow/Unary", msg("slow", 0)).await.unwrap_err();
        assert_eq!((s.code(), s.message()), (Code::Unavailable, "upstream request timeout"));
        // No route: 404, UNIMPLEMENTED.
        let s = unary(&mut c, "/other.Service/Call", msg("x", 0)).await.unwrap_err();
        assert_eq!(s.code(), Code::Unimplemented);
        // The connection is still good.
        assert_eq!(unary(&mut c, "/test.Echo/Unary", msg("ok", 1)).await.unwrap(), msg("echo: ok", 1));
    })
    .await
    .expect("calls finish");
    // The cluster's stats count what the replies stand for, as Envoy's router does.
    assert_eq!(stat(admin, "cluster.empty.upstream_rq_503").await, 1);
    assert_eq!(stat(admin, "cluster.grpc.upstream_rq_504").await, 1);
}

#[tokio::test]
async fn grpc_timeout_is_the_route_timeout_with_grpc_timeout_header_max() {
    let server = GrpcServer::start(11);
    let (_proxy, listen, admin) = proxy_for(server.addr, 11).await;
    let mut c = grpc_client(listen).await;
    // 2 s asked, 1.7 s offset: the proxy gives up after 0.3 s (the route's
    // own 30 s no longer counts), well before the server would.
    let call = |path: &'static str| {
        let mut req = Request::new(msg("slow", 0));
        req.set_timeout(Duration::from_secs(2));
        (req, PathAndQuery::from_static(path))
    };
    let started = std::time::Instant::now();
    c.ready().await.unwrap();
    let (req, path) = call("/test.Deadline/Unary");
    let s = tokio::time::timeout(LIMIT, c.unary::<Msg, Msg, _>(req, path, codec())).await.unwrap().unwrap_err();
    assert_eq!((s.code(), s.message()), (Code::Unavailable, "upstream request timeout"));
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    assert_eq!(stat(admin, "cluster.grpc.upstream_rq_timeout").await, 1);
    // Without grpc_timeout_header_max the header is not the proxy's to
    // read: the server's own deadline ends the call.
    c.ready().await.unwrap();
    let (req, path) = call("/test.Echo/Unary");
    let s = tokio::time::timeout(LIMIT, c.unary::<Msg, Msg, _>(req, path, codec())).await.unwrap().unwrap_err();
    assert_ne!(s.message(), "upstream request timeout", "{s:?}");
    assert_eq!(stat(admin, "cluster.grpc.upstream_rq_timeout").await, 1);
}

#[tokio::test]
async fn a_grpc_request_over_http1_gets_a_grpc_local_reply() {
    let server = GrpcServer::start(5);
    let (_proxy, listen, _admin) = proxy_for(server.addr, 5).await;
    let resp = client()
        .post(format!("http://{listen}/test.Empty/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "14");
    assert_eq!(resp.headers()["grpc-message"], "no healthy upstream");
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    assert!(resp.bytes().await.unwrap().is_empty());
}

/// A plain (not gRPC) HTTP/2 server with prior knowledge (or, `auto`,
/// HTTP/1.1 as well): answers with the version it was spoken to in, the
/// method, the path and the body.
async fn h2c_server(host: u8) -> SocketAddr {
    plain_server(host, false).await
}

async fn plain_server(host: u8, auto: bool) -> SocketAddr {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind((ip(40, host), 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let head = format!("{:?} {} {}", req.version(), req.method(), req.uri().path());
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let text = format!("{head} {}", String::from_utf8_lossy(&body));
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(text))))
                });
                if auto {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_http1_client_reaches_an_h2c_upstream() {
    let backend = h2c_server(6).await;
    let listen = free_addr(ip(40, 6));
    let admin = free_addr(ip(40, 6));
    let config = yaml::bootstrap_with_admin(
        admin,
        &[yaml::route_listener(listen, "plain", &[("/", "cluster: h2plain")])],
        // The deprecated cluster field, as many configs still write it.
        &[yaml::cluster(
            "h2plain",
            "STATIC",
            &[(backend.ip().to_string(), backend.port())],
            "    http2_protocol_options: {}",
        )],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    // One HTTP/1.1 connection: a request before and after the one with a
    // body, so the connection is seen to carry on.
    let http1 = reqwest::Client::builder().no_proxy().http1_only().pool_max_idle_per_host(1).build().unwrap();
    for (method, path, body) in [("GET", "/a", ""), ("POST", "/b", "some body"), ("GET", "/c", "")] {
        let req = http1.request(method.parse().unwrap(), format!("http://{listen}{path}")).body(body.to_string());
        let resp = tokio::time::timeout(LIMIT, req.send()).await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_11);
        assert_eq!(resp.text().await.unwrap(), format!("HTTP/2.0 {method} {path} {body}"), "{}", proxy.log());
    }
    // A request is counted as its stream ends, which may be just after the
    // client has read the response.
    let counted = eventually(LIMIT, || async {
        stat(admin, "cluster.h2plain.upstream_rq_200").await == 3
            && stat(admin, "http.plain.downstream_rq_total").await == 3
            && stat(admin, "http.plain.downstream_rq_active").await == 0
    })
    .await;
    assert!(counted, "{}", proxy.log());
    assert_eq!(stat(admin, "cluster.h2plain.upstream_cx_http2_total").await, 1);
    assert_eq!(stat(admin, "cluster.h2plain.upstream_cx_http1_total").await, 0);
}

#[tokio::test]
async fn grpc_over_tls_both_ways_with_alpn() {
    // The proxy is its own TLS hop: `front` (h2c from the client) sends to
    // cluster `viatls` (TLS, `auto_config`: ALPN chooses h2), which is the
    // proxy's own TLS listener `edge` (h2 by ALPN downstream), which sends
    // to the gRPC server over h2c.
    let server = GrpcServer::start(7);
    let front = free_addr(ip(40, 7));
    let edge = free_addr(ip(40, 7));
    let admin = free_addr(ip(40, 7));
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let edge_listener = yaml::with_inline_tls(
        &yaml::route_listener(edge, "edge", &[("/", "cluster: grpc")]),
        &cert.cert.pem(),
        &cert.signing_key.serialize_pem(),
    )
    .replace(
        "          common_tls_context:\n",
        "          common_tls_context:\n            alpn_protocols: [h2, http/1.1]\n",
    );
    let via_tls = r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        auto_config: { http2_protocol_options: {} }"#;
    let config = yaml::bootstrap_with_admin(
        admin,
        &[yaml::route_listener(front, "front", &[("/", "cluster: viatls")]), edge_listener],
        &[
            yaml::cluster("viatls", "STATIC", &[(edge.ip().to_string(), edge.port())], via_tls),
            yaml::cluster("grpc", "STATIC", &[(server.addr.ip().to_string(), server.addr.port())], H2_OPTIONS),
        ],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    let mut c = grpc_client(front).await;
    tokio::time::timeout(LIMIT, async {
        assert_eq!(unary(&mut c, "/test.Echo/Unary", msg("tls", 3)).await.unwrap(), msg("echo: tls", 3));
        let s = unary(&mut c, "/test.Echo/Unary", msg("fail", 0)).await.unwrap_err();
        assert_eq!((s.code(), s.message()), (Code::FailedPrecondition, "the thing is ünhappy: 50% done"));
        c.ready().await.unwrap();
        let mut stream = c
            .server_streaming(Request::new(msg("s", 3)), PathAndQuery::from_static("/test.Echo/Count"), codec())
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while stream.message().await.unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
    })
    .await
    .expect("calls finish");
    // ALPN chose h2 for the one TLS connection.
    assert_eq!(stat(admin, "cluster.viatls.upstream_cx_http2_total").await, 1, "{}", proxy.log());
    assert_eq!(stat(admin, "cluster.viatls.upstream_cx_http1_total").await, 0);
    assert_eq!(stat(admin, "http.edge.downstream_rq_http2_total").await, 3);
}

#[tokio::test]
async fn use_downstream_protocol_config_speaks_the_clients_version() {
    let backend = plain_server(8, true).await;
    let listen = free_addr(ip(40, 8));
    let admin = free_addr(ip(40, 8));
    let options = r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        use_downstream_protocol_config: { http_protocol_options: {}, http2_protocol_options: {} }"#;
    let config = yaml::bootstrap_with_admin(
        admin,
        &[yaml::route_listener(listen, "mirror", &[("/", "cluster: mirror")])],
        &[yaml::cluster("mirror", "STATIC", &[(backend.ip().to_string(), backend.port())], options)],
    );
    let _proxy = ProxyProcess::live(&config, admin).await;
    let http1 = reqwest::Client::builder().no_proxy().http1_only().build().unwrap();
    let h2c = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    for (client, version) in [(&http1, "HTTP/1.1"), (&h2c, "HTTP/2.0")] {
        let resp = tokio::time::timeout(LIMIT, client.get(format!("http://{listen}/v")).send()).await.unwrap().unwrap();
        assert_eq!(resp.text().await.unwrap(), format!("{version} GET /v "));
    }
    assert_eq!(stat(admin, "cluster.mirror.upstream_cx_http1_total").await, 1);
    assert_eq!(stat(admin, "cluster.mirror.upstream_cx_http2_total").await, 1);
}

#[tokio::test]
async fn the_clusters_idle_timeout_closes_pooled_connections() {
    let backend = support::Backend::start("b", std::net::SocketAddr::new(ip(40, 9), 0)).await;
    let listen = free_addr(ip(40, 9));
    let admin = free_addr(ip(40, 9));
    let idle = |t: &str| {
        format!(
            r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: {{ idle_timeout: {t} }}
        explicit_http_config: {{ http_protocol_options: {{}} }}"#
        )
    };
    let ep = [(backend.addr.ip().to_string(), backend.addr.port())];
    let config = yaml::bootstrap_with_admin(
        admin,
        &[yaml::route_listener(listen, "idle", &[("/short", "cluster: short"), ("/", "cluster: long")])],
        &[yaml::cluster("short", "STATIC", &ep, &idle("0.2s")), yaml::cluster("long", "STATIC", &ep, &idle("60s"))],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    let c = client();
    for path in ["/short", "/long"] {
        for _ in 0..2 {
            let (status, _) = support::send(c.get(format!("http://{listen}{path}"))).await;
            assert_eq!(status, 200, "{}", proxy.log());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // A connection idle past 0.2 s is not reused; one kept for 60 s is.
    assert_eq!(stat(admin, "cluster.short.upstream_cx_total").await, 2, "{}", proxy.log());
    assert_eq!(stat(admin, "cluster.long.upstream_cx_total").await, 1);
    assert_eq!(stat(admin, "cluster.long.upstream_cx_http1_total").await, 1);
}

/// A connection the native engine serves until a request routes to an
/// HTTP/2 cluster, which Pingora's engine then takes over from that
/// request's head: what the native engine removed or refused must not
/// reach the upstream through the replay, and the body and the next
/// request on the connection must stay where they belong.
#[tokio::test]
async fn a_request_handed_to_pingora_after_routing_keeps_every_rule() {
    use support::raw::{asked, read_response, try_read_response};
    use support::Backend;
    use tokio::io::AsyncWriteExt;
    let h1 = Backend::start("h1", SocketAddr::new(ip(40, 9), 0)).await;
    let h2 = Backend::start("h2", SocketAddr::new(ip(40, 9), 0)).await;
    let listen = free_addr(ip(40, 9));
    let admin = free_addr(ip(40, 9));
    let config = yaml::bootstrap_with_admin(
        admin,
        &[yaml::route_listener(listen, "handoff", &[("/one", "cluster: h1plain"), ("/", "cluster: h2plain")])],
        &[
            yaml::cluster("h1plain", "STATIC", &[(h1.addr.ip().to_string(), h1.addr.port())], ""),
            yaml::cluster(
                "h2plain",
                "STATIC",
                &[(h2.addr.ip().to_string(), h2.addr.port())],
                "    http2_protocol_options: {}",
            ),
        ],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: front\r\n\r\n").await.unwrap();
    let r = read_response(&mut s, &mut buf, "GET").await;
    assert_eq!(r.status, 200, "{}", proxy.log());
    // Hop-by-hop fields (`te` other than trailers included), a field the
    // client's `Connection` names, and a body followed by the next request.
    s.write_all(
        b"POST /two HTTP/1.1\r\nHost: front\r\nTE: gzip\r\nKeep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\nConnection: x-secret\r\nX-Secret: s\r\n\
          Content-Length: 5\r\n\r\nhelloGET /three HTTP/1.1\r\nHost: front\r\n\r\n",
    )
    .await
    .unwrap();
    let r = read_response(&mut s, &mut buf, "POST").await;
    assert_eq!(r.status, 200, "{}", proxy.log());
    for name in ["te", "keep-alive", "proxy-connection", "connection", "x-secret"] {
        assert_eq!(h2.last_header(name), None, "{name} reached the HTTP/2 upstream");
    }
    assert_eq!(h2.last_uri(), "http://front/two");
    assert_eq!(h2.hits(), 1, "the body is not a request");
    // Pingora's engine answers a pipelined request or closes (README): the
    // next request is never read as part of the one before.
    let mut closed = false;
    match try_read_response(&mut s, &mut buf, &mut closed, asked("GET"), LIMIT).await {
        Ok(r) => {
            assert_eq!(r.status, 200, "{}", proxy.log());
            assert_eq!(h2.last_uri(), "http://front/three", "the pipelined request is its own");
            assert_eq!(h2.hits(), 2);
        }
        Err(_) => assert_eq!(h2.hits(), 1, "{}", proxy.log()),
    }
}
