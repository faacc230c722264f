//! The web face's connections: plain TCP, or TLS with the gRPC port's certificate and key
//! (reloaded with them), offering HTTP/2 and HTTP/1.1. Handshakes run concurrently, each
//! within the handshake timeout, so a client that stalls its handshake holds up nobody else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::listener::tls::Tls;

/// The remote address of a web connection, plain or TLS, in each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct WebPeer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>>
    for WebPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        WebPeer(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsIncoming>>
    for WebPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsIncoming>) -> Self {
        WebPeer(*stream.remote_addr())
    }
}

/// Completed TLS handshakes, as axum takes connections.
pub struct TlsIncoming {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended (the server stops): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Accepts on `tcp` and hands over the connections whose TLS handshake completed within
/// `handshake_timeout`, until `stop`.
pub fn tls_incoming(
    tcp: TcpListener,
    tls: Arc<Tls>,
    handshake_timeout: Duration,
    stop: CancellationToken,
) -> std::io::Result<TlsIncoming> {
    let local = tcp.local_addr()?;
    let (sender, ready) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = tcp.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "the web listener could not accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => return,
            };
            let acceptor = tls.web_acceptor();
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = sender.send((tls, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "a web TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "a web TLS handshake timed out"),
                }
            });
        }
    });
    Ok(TlsIncoming { ready, local })
}
