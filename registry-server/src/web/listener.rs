//! The web face's connections, accepted by the same machinery as the gRPC port's
//! ([`crate::listener::incoming`]): the total and per-peer connection caps, TLS with the gRPC
//! port's certificate (offering HTTP/1.1 besides HTTP/2), concurrent handshakes each within the
//! handshake timeout, and the deadlines that close a connection that begins no request or stays
//! idle. A public port meets more idle browsers and scanners than the gRPC port; each holds a
//! file descriptor only as long as those deadlines allow.

use std::net::SocketAddr;

use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::listener::Conn;
use crate::peers::Peer;

/// Who is at the other end of a web connection, in each request's extensions: the address,
/// the unit of the per-peer limits, and the connection's activity for the idle deadline.
#[derive(Debug, Clone)]
pub struct WebPeer(pub Peer);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, WebIncoming>>
    for WebPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, WebIncoming>) -> Self {
        WebPeer(stream.io().peer().clone())
    }
}

/// Accepted connections (within the caps, handshakes done), as axum takes them.
pub struct WebIncoming {
    accepted: ReceiverStream<std::io::Result<Conn>>,
    local: SocketAddr,
}

impl WebIncoming {
    /// The connections `accepted` yields on the socket bound to `local`.
    pub fn new(accepted: ReceiverStream<std::io::Result<Conn>>, local: SocketAddr) -> Self {
        Self { accepted, local }
    }
}

impl axum::serve::Listener for WebIncoming {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.accepted.next().await {
                Some(Ok(conn)) => {
                    let addr = conn.peer().addr;
                    return (conn, addr);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "a web connection failed"),
                // The accepting task ended (the server stops): no more connections.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
