//! A TCP proxy that puts network faults between the code under test and a server (Redis, or
//! the DynamoDB API): added latency, a black hole (nothing moves and no connection is reset,
//! so clients run into their own timeouts; what was sent is delivered once it heals, as TCP
//! would), and resets (every open connection is closed with an RST, as when a server or a
//! NAT drops it).
//!
//! Point the client at [`TcpFaults::node`] instead of the server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards everything.
    Pass,
    /// Forwards everything, each chunk after this delay.
    Latency(Duration),
    /// Accepts connections but moves no byte, in either direction, until the mode changes:
    /// like a partition, where TCP keeps retransmitting and delivers once it heals.
    BlackHole,
}

/// A running proxy; stops (and drops every connection) when dropped.
pub struct TcpFaults {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
    /// Bumped to kill every open connection silently.
    drops: watch::Sender<u64>,
    connections: Arc<Mutex<u64>>,
    server: tokio::task::JoinHandle<()>,
}

impl TcpFaults {
    /// A proxy to `upstream` (`host:port`) on a free loopback port, forwarding.
    pub async fn start(upstream: &str) -> TcpFaults {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind the TCP fault proxy: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("no local address: {e}"));
        let (mode, _) = watch::channel(Mode::Pass);
        let (resets, _) = watch::channel(0);
        let (drops, _) = watch::channel(0);
        let connections = Arc::new(Mutex::new(0));
        let (mode_rx, resets_rx, drops_rx) =
            (mode.subscribe(), resets.subscribe(), drops.subscribe());
        let (upstream, counted) = (upstream.to_owned(), connections.clone());
        let server = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                *counted.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                let (upstream, mode, resets, drops) = (
                    upstream.clone(),
                    mode_rx.clone(),
                    resets_rx.clone(),
                    drops_rx.clone(),
                );
                tokio::spawn(async move {
                    let _ = relay(client, &upstream, mode, resets, drops).await;
                });
            }
        });
        TcpFaults {
            addr,
            mode,
            resets,
            drops,
            connections,
            server,
        }
    }

    /// `127.0.0.1:<port>`, to give the client.
    pub fn node(&self) -> String {
        self.addr.to_string()
    }

    /// Changes what happens to traffic, on open connections too.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Closes every open connection with an RST; later connections are served.
    pub fn reset_all(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// Kills every open connection silently: from now on their bytes go nowhere, in either
    /// direction, and nothing resets them (a NAT or a middlebox that forgot them). Later
    /// connections are served.
    pub fn drop_open_connections(&self) {
        self.drops.send_modify(|n| *n += 1);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        *self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for TcpFaults {
    fn drop(&mut self) {
        self.server.abort();
        self.reset_all();
    }
}

/// Relays one connection until either side closes it or a reset is asked for.
async fn relay(
    client: TcpStream,
    upstream: &str,
    mode: watch::Receiver<Mode>,
    mut resets: watch::Receiver<u64>,
    mut drops: watch::Receiver<u64>,
) -> std::io::Result<()> {
    resets.mark_unchanged();
    drops.mark_unchanged();
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outbound = pump(client_read, server_write, mode.clone(), dead.clone());
    let inbound = pump(server_read, client_write, mode, dead.clone());
    let killer = async {
        if drops.changed().await.is_ok() {
            dead.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = async { tokio::join!(outbound, inbound) } => Ok(()),
        _ = resets.changed() => Ok(()),
        () = killer => Ok(()),
    }
    // Dropping the halves with a zero linger sends the RST (below).
}

/// Copies one direction, honouring the mode chunk by chunk.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    dead: Arc<std::sync::atomic::AtomicBool>,
) {
    // A reset must be an RST, not a FIN. A zero linger never blocks (only a positive one
    // would, which is what the deprecation is about).
    #[allow(deprecated)]
    let _ = to.as_ref().set_linger(Some(Duration::ZERO));
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        // In a black hole nothing is read: the bytes wait in the kernel's buffers.
        while *mode.borrow_and_update() == Mode::BlackHole {
            if mode.changed().await.is_err() {
                return;
            }
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if dead.load(std::sync::atomic::Ordering::SeqCst) {
            continue; // silently dropped: read and forgotten
        }
        let current = *mode.borrow();
        match current {
            Mode::Latency(delay) => tokio::time::sleep(delay).await,
            // Read just as the hole opened: held until it closes.
            Mode::BlackHole => {
                while *mode.borrow_and_update() == Mode::BlackHole {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
            Mode::Pass => {}
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
