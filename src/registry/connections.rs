//! The registry's TCP connections: accepted by one loop that caps how many are open, backs
//! off when accepting fails (out of fds), and closes a connection that has not started
//! talking within a few seconds, so idle sockets cannot pile up.
//!
//! Each connection carries a [`TcpPeer`] into its requests, which says where it comes from
//! and, once looked up, which supervised component is behind it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tonic::transport::server::Connected;

use super::peer;
use super::state::{Registry, SupervisedComponent};

/// Bytes of the HTTP/2 client preface (`PRI * HTTP/2.0…`), the least a real client sends first.
const PREFACE_BYTES: usize = 24;

/// How many connections may be open and how soon each must start talking.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open TCP connections at most; supervised components still get in beyond it. `None`:
    /// half the open-file limit, between 64 and 8192.
    pub max_connections: Option<usize>,
    /// A connection that has not sent its first request bytes by then is closed.
    pub handshake_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl ConnectionLimits {
    fn most_open(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024);
            (soft / 2).clamp(64, 8192) as usize
        })
    }
}

/// Where a TCP connection comes from; tonic puts it in every request's extensions.
#[derive(Debug, Clone)]
pub struct TcpPeer {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    component: Arc<OnceLock<SupervisedComponent>>,
    /// [`Registry::supervised_starts`] at the last lookup that found nobody, plus one (0: none
    /// yet).
    missed_at: Arc<AtomicU64>,
}

impl TcpPeer {
    fn new(local: SocketAddr, remote: SocketAddr) -> Self {
        TcpPeer {
            local,
            remote,
            component: Arc::default(),
            missed_at: Arc::default(),
        }
    }

    /// The supervised component whose process holds the other end. Found once per
    /// connection; after a miss `/proc` is searched again only once the supervisor has
    /// started another process (the child may have connected before it was recorded), so a
    /// stranger's requests cannot each cost a search.
    pub fn component(&self, registry: &Registry) -> Option<SupervisedComponent> {
        if let Some(found) = self.component.get() {
            return Some(found.clone());
        }
        let starts = registry.supervised_starts();
        if self.missed_at.load(Ordering::Relaxed) == starts + 1 {
            return None;
        }
        match peer::component_behind(self.local, self.remote, &registry.supervised_processes()) {
            Some(found) => Some(self.component.get_or_init(|| found).clone()),
            None => {
                self.missed_at.store(starts + 1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// One accepted connection.
pub struct PeerStream {
    io: TcpStream,
    peer: TcpPeer,
    /// Armed until the client has sent its preface.
    handshake: Option<Pin<Box<Sleep>>>,
    received: usize,
    _open: OpenSlot,
}

/// Counts a connection as open until it is dropped.
struct OpenSlot(Arc<AtomicUsize>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connected for PeerStream {
    type ConnectInfo = TcpPeer;

    fn connect_info(&self) -> TcpPeer {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                self.received += buf.filled().len() - before;
                if self.received >= PREFACE_BYTES {
                    self.handshake = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = self
                    .handshake
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent no request in time",
                    )))
                } else {
                    Poll::Pending
                }
            }
            failed => failed,
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Accepts on `listener` until the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    registry: Registry,
    limits: ConnectionLimits,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<PeerStream>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(accept_loop(listener, registry, limits, tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    registry: Registry,
    limits: ConnectionLimits,
    tx: mpsc::Sender<io::Result<PeerStream>>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let most_open = limits.most_open();
    let mut backoff = Duration::ZERO;
    let mut refused = Quiet::new("registry connections refused: too many open");
    let mut failing = Quiet::new("registry cannot accept connections");
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = tx.closed() => return,
        };
        let (io, remote) = match accepted {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            Err(e) => {
                // Out of fds or memory: waiting is the only cure, and spinning on accept
                // would take the CPU from everything that could free some.
                failing.note(&e.to_string());
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let _ = io.set_nodelay(true);
        let Ok(local) = io.local_addr() else { continue };
        let peer = TcpPeer::new(local, remote);
        if open.load(Ordering::Relaxed) >= most_open && peer.component(&registry).is_none() {
            refused.note(&format!(
                "{most_open} open, the most allowed; {remote} is not a supervised component"
            ));
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let stream = PeerStream {
            io,
            peer,
            handshake: Some(Box::pin(tokio::time::sleep(limits.handshake_timeout))),
            received: 0,
            _open: OpenSlot(open.clone()),
        };
        if tx.send(Ok(stream)).await.is_err() {
            return;
        }
    }
}

/// A warning that repeats at most every 10 s, saying how often it happened meanwhile.
struct Quiet {
    what: &'static str,
    last: Option<Instant>,
    since: u64,
}

impl Quiet {
    fn new(what: &'static str) -> Self {
        Quiet {
            what,
            last: None,
            since: 0,
        }
    }

    fn note(&mut self, detail: &str) {
        self.since += 1;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(times = self.since, "{}: {detail}", self.what);
            self.last = Some(Instant::now());
            self.since = 0;
        }
    }
}
