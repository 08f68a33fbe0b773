//! A slowloris for tests: idle TCP sockets that never send a byte, each
//! reopened when the server drops it. Shared by the server crate's TLS
//! tests and the end-to-end attack suite (included by path).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;

/// Idle TCP sockets from one source address to `target` that never send a
/// byte; each is reopened (after `pause`) whenever the server drops it.
pub struct Slowloris {
    stop: Arc<AtomicBool>,
    /// Sockets open now.
    pub open: Arc<AtomicUsize>,
    /// Sockets reopened after the server dropped them.
    pub reopened: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Slowloris {
    /// Opens `sockets` sockets from `source` to `target`.
    pub fn start(target: SocketAddr, source: std::net::IpAddr, sockets: usize, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let reopened = Arc::new(AtomicUsize::new(0));
        let tasks = (0..sockets)
            .map(|_| {
                let (stop, open, reopened) = (stop.clone(), open.clone(), reopened.clone());
                tokio::spawn(async move {
                    let mut first = true;
                    while !stop.load(Ordering::Relaxed) {
                        let socket = TcpSocket::new_v4().unwrap();
                        socket.bind(SocketAddr::new(source, 0)).unwrap();
                        if let Ok(mut tcp) = socket.connect(target).await {
                            open.fetch_add(1, Ordering::Relaxed);
                            if !first {
                                reopened.fetch_add(1, Ordering::Relaxed);
                            }
                            first = false;
                            // Never writes; returns when the server closes.
                            let mut buf = [0u8; 64];
                            let _ = tcp.read(&mut buf).await;
                            open.fetch_sub(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Slowloris {
            stop,
            open,
            reopened,
            tasks,
        }
    }

    /// Stops every socket.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.abort();
        }
    }
}
