//! A real DNS server on loopback (hickory-server) whose answers a test can
//! change: add or remove addresses, answer NXDOMAIN, or fail with SERVFAIL.

use hickory_server::authority::MessageResponseBuilder;
use hickory_server::proto::op::{Header, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA};
use hickory_server::proto::rr::{RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};

#[derive(Default)]
struct Zone {
    records: Mutex<HashMap<String, Vec<IpAddr>>>,
    fail: AtomicBool,
    queries: AtomicUsize,
    ttl: AtomicUsize,
}

pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<Zone>,
    task: tokio::task::JoinHandle<()>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl TestDns {
    /// Serves UDP and TCP on `ip`, on one port.
    pub async fn start(ip: IpAddr) -> Self {
        // The UDP port the kernel gives may be taken for TCP: then another.
        let (udp, addr, tcp) = 'bind: {
            for _ in 0..20 {
                let udp = UdpSocket::bind(SocketAddr::new(ip, 0)).await.expect("bind dns udp");
                let addr = udp.local_addr().expect("dns addr");
                match TcpListener::bind(addr).await {
                    Ok(tcp) => break 'bind (udp, addr, tcp),
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                    Err(e) => panic!("bind dns tcp {addr}: {e}"),
                }
            }
            panic!("no port on {ip} free for both UDP and TCP");
        };
        let zone = Arc::new(Zone::default());
        zone.ttl.store(600, Ordering::SeqCst);
        let mut server = ServerFuture::new(Handler(zone.clone()));
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5));
        let task = tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        Self { addr, zone, task }
    }

    pub fn set(&self, name: &str, addrs: &[IpAddr]) {
        self.zone.records.lock().unwrap().insert(key(name), addrs.to_vec());
    }

    /// The name stops existing (NXDOMAIN).
    pub fn remove(&self, name: &str) {
        self.zone.records.lock().unwrap().remove(&key(name));
    }

    /// Every query fails with SERVFAIL while set.
    pub fn set_failing(&self, fail: bool) {
        self.zone.fail.store(fail, Ordering::SeqCst);
    }

    pub fn set_ttl(&self, ttl: u32) {
        self.zone.ttl.store(ttl as usize, Ordering::SeqCst);
    }

    pub fn queries(&self) -> usize {
        self.zone.queries.load(Ordering::SeqCst)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Handler(Arc<Zone>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(&self, request: &Request, mut response: R) -> ResponseInfo {
        self.0.queries.fetch_add(1, Ordering::SeqCst);
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(true);
        let info = match request.request_info() {
            Ok(i) => i,
            Err(_) => {
                let msg = builder.error_msg(request.header(), ResponseCode::FormErr);
                return response.send_response(msg).await.unwrap_or_else(|_| header.into());
            }
        };
        if self.0.fail.load(Ordering::SeqCst) {
            let msg = builder.error_msg(request.header(), ResponseCode::ServFail);
            return response.send_response(msg).await.unwrap_or_else(|_| header.into());
        }
        let name = info.query.original().name().clone();
        let qtype = info.query.query_type();
        let found = self.0.records.lock().unwrap().get(&key(&name.to_string())).cloned();
        let ttl = self.0.ttl.load(Ordering::SeqCst) as u32;
        let records: Vec<Record> = match &found {
            None => {
                header.set_response_code(ResponseCode::NXDomain);
                Vec::new()
            }
            Some(addrs) => addrs
                .iter()
                .filter_map(|ip| match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A) => Some(Record::from_rdata(name.clone(), ttl, RData::A(A(*v4)))),
                    (IpAddr::V6(v6), RecordType::AAAA) => {
                        Some(Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(*v6))))
                    }
                    _ => None,
                })
                .collect(),
        };
        let msg = builder.build(header, records.iter(), [], [], []);
        response.send_response(msg).await.unwrap_or_else(|_| header.into())
    }
}
