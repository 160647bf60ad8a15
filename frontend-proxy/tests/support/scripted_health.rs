//! An upstream whose health-check answers follow a script, and which
//! records when each check arrived: what a test of health-check schedules
//! needs to see (the gaps between checks) and to steer (pass, fail with a
//! status, fail at the network level). Any other path answers 200.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The path health checks use.
pub const HEALTH_PATH: &str = "/healthz";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 200.
    Pass,
    /// An HTTP status the check does not expect: fails the host at once.
    Status(u16),
    /// The request is read and the connection closed without an answer:
    /// a network failure, which counts toward `unhealthy_threshold`.
    Close,
}

#[derive(Default)]
struct State {
    script: VecDeque<Answer>,
    /// The answer once the script has run out.
    then: Option<Answer>,
    checks: Vec<(Instant, Answer)>,
}

pub struct ScriptedBackend {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl ScriptedBackend {
    /// Listens on `addr`; health checks get `script` in order, then `then`.
    pub async fn start(addr: SocketAddr, script: &[Answer], then: Answer) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind scripted backend");
        let addr = listener.local_addr().expect("scripted backend addr");
        let state = Arc::new(Mutex::new(State {
            script: script.iter().copied().collect(),
            then: Some(then),
            checks: Vec::new(),
        }));
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                tokio::spawn(serve(stream, s.clone()));
            }
        });
        Self { addr, state, task }
    }

    /// When each health check arrived, and how it was answered.
    pub fn checks(&self) -> Vec<(Instant, Answer)> {
        self.state.lock().unwrap().checks.clone()
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    loop {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
            if head.len() > 16 * 1024 {
                return;
            }
        }
        let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
        let path = line.split(' ').nth(1).unwrap_or_default().to_string();
        let answer = if path == HEALTH_PATH {
            let mut s = state.lock().unwrap();
            let a = s.script.pop_front().or(s.then).unwrap_or(Answer::Pass);
            s.checks.push((Instant::now(), a));
            a
        } else {
            Answer::Pass
        };
        let status = match answer {
            Answer::Close => return,
            Answer::Pass => 200,
            Answer::Status(code) => code,
        };
        let response = format!("HTTP/1.1 {status} Scripted\r\ncontent-length: 2\r\nx-served-by: scripted\r\n\r\nok");
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
