//! One accepted connection: its byte stream (plain TCP or TLS), who is at the other end, and the
//! deadlines that close it when the peer is silent or idle.
//!
//! A connection must begin its first call within the handshake timeout of being accepted (an
//! idle TCP connection, or one that trickles a byte now and then, costs the attacker nothing and
//! the registry a file descriptor), and is closed once it has had no call in progress for the
//! idle timeout. Dead peers that stop answering HTTP/2 pings are closed by hyper's keepalive.
//! The close is abrupt (an I/O error, not an HTTP/2 GOAWAY), so a call a client starts at that
//! very moment fails with `UNAVAILABLE`; such a call is safe to retry (a command keeps its
//! request ID).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;

use crate::peers::{Activity, Peer, PeerKey, Share};

/// The byte stream under a connection.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection, as tonic serves it.
pub struct Conn {
    io: Io,
    peer: Peer,
    deadline: Pin<Box<Sleep>>,
    idle: Duration,
    /// This connection's place in the connection limits.
    _share: Share,
}

/// How long a connection may stay silent, then idle.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From accepting to the TLS handshake's end, and again to the first call.
    pub first_call: Duration,
    /// With no call in progress.
    pub idle: Duration,
}

impl Conn {
    /// A plaintext connection.
    pub fn plain(tcp: TcpStream, addr: SocketAddr, share: Share, deadlines: Deadlines) -> Self {
        Self::new(Io::Plain(tcp), addr, false, share, deadlines)
    }

    /// A connection whose TLS handshake is done.
    pub fn tls(
        tls: TlsStream<TcpStream>,
        addr: SocketAddr,
        share: Share,
        deadlines: Deadlines,
    ) -> Self {
        let client_certificate = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
        Self::new(Io::Tls(Box::new(tls)), addr, client_certificate, share, deadlines)
    }

    fn new(io: Io, addr: SocketAddr, client_certificate: bool, share: Share, d: Deadlines) -> Self {
        let peer =
            Peer { addr, key: PeerKey::of(addr), client_certificate, activity: Activity::new() };
        let deadline = Box::pin(tokio::time::sleep(d.first_call));
        Self { io, peer, deadline, idle: d.idle, _share: share }
    }

    /// Who is at the other end.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Whether the deadline that just passed closes the connection; if not, it is moved to the
    /// next moment that could.
    fn expired(&mut self) -> bool {
        if !self.peer.activity.used() {
            return true;
        }
        let now = Instant::now();
        let next = match self.peer.activity.idle_since() {
            None => now + self.idle,
            Some(since) if now >= since + self.idle => return true,
            Some(since) => since + self.idle,
        };
        self.deadline.as_mut().reset(next.into());
        false
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if read.is_ready() {
            return read;
        }
        while self.deadline.as_mut().poll(cx).is_ready() {
            if self.expired() {
                let why = if self.peer.activity.used() { "was idle" } else { "began no call" };
                tracing::debug!(peer = %self.peer.addr, "closing a connection that {why}");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
            }
        }
        Poll::Pending
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}
