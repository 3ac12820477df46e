//! The API's listener: TCP, with TLS when configured. Handshakes run in
//! their own tasks (at most [`MAX_HANDSHAKES`] at once, [`HANDSHAKE_TIMEOUT`]
//! each) so a slow client never holds up the next connection; finished
//! connections are handed to `axum::serve`. Every connection gets
//! TCP_NODELAY (agents' orders are small frames that must leave at once).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

/// Handshakes in flight at most.
pub const MAX_HANDSHAKES: usize = 256;
/// A TLS handshake that takes longer is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Accepted (and, with TLS, handshaken) connections.
pub struct ApiListener {
    rx: mpsc::Receiver<(Box<dyn Io>, SocketAddr)>,
    local: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl ApiListener {
    pub fn new(
        tcp: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<ApiListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let accept = tokio::spawn(accept_loop(
            tcp,
            tls.map(tokio_rustls::TlsAcceptor::from),
            tx,
        ));
        Ok(ApiListener { rx, local, accept })
    }
}

impl Drop for ApiListener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tx: mpsc::Sender<(Box<dyn Io>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: wait instead of spinning.
                tracing::warn!(error = %e, "accepting an API connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = tls.clone() else {
            if tx.send((Box::new(stream), peer)).await.is_err() {
                return;
            }
            continue;
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many TLS handshakes in flight; connection dropped");
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((Box::new(tls), peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for ApiListener {
    type Io = Box<dyn Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop ended (it never does while the listener lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
