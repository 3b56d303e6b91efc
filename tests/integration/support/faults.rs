//! A fault-injecting TCP proxy for S3 traffic: some new connections get `503 SlowDown`, some are
//! dropped before any answer, some are cut in the middle of a response. Binds 127.0.0.1 only and
//! stops when dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How many faults of each kind were injected.
#[derive(Debug, Default)]
pub struct FaultStats {
    pub connections: AtomicU64,
    pub slowdowns: AtomicU64,
    pub drops: AtomicU64,
    pub cuts: AtomicU64,
}

pub struct FaultProxy {
    pub endpoint: String,
    pub stats: Arc<FaultStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const SLOWDOWN: &str = "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: 118\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

impl FaultProxy {
    /// Proxies to 127.0.0.1:`upstream`. Of every 10 new connections: one gets 503 SlowDown, one
    /// is dropped, one is cut after a few hundred bytes of the answer.
    pub async fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let stats = Arc::new(FaultStats::default());
        let s = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let n = s.connections.fetch_add(1, Ordering::Relaxed);
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    match n % 10 {
                        3 => {
                            s.slowdowns.fetch_add(1, Ordering::Relaxed);
                            slowdown(client).await;
                        }
                        6 => {
                            s.drops.fetch_add(1, Ordering::Relaxed);
                            drop(client);
                        }
                        9 => {
                            s.cuts.fetch_add(1, Ordering::Relaxed);
                            forward(client, upstream, Some(300 + (n as usize * 37) % 700)).await;
                        }
                        _ => forward(client, upstream, None).await,
                    }
                });
            }
        });
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            stats,
            task,
        }
    }
}

async fn slowdown(mut client: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let _ = client.write_all(SLOWDOWN.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// Copies bytes both ways; with `cut_after`, closes both sides once that many bytes of the
/// answer went through.
async fn forward(client: TcpStream, upstream: u16, cut_after: Option<usize>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0usize;
    loop {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match cut_after {
            Some(limit) if sent + n >= limit => {
                let _ = cw.write_all(&buf[..limit - sent]).await;
                break;
            }
            _ => n,
        };
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
        sent += n;
    }
    up.abort();
}
