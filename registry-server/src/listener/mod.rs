//! Accepting connections: the listening socket, the connection limits, TLS, and the deadlines
//! for silent and idle peers, in front of tonic (which serves what this yields).
//!
//! Every connection is a file descriptor, so the number open is capped, in total below the
//! process's open-files limit and per peer ([`crate::peers`]). A connection over a
//! cap is closed at once rather than left in the kernel's backlog, where it would wait for a
//! place the attacker keeps taken. TLS handshakes run concurrently, each within the handshake
//! timeout, so a slow one holds up nobody.

mod conn;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

pub use self::conn::{Conn, Deadlines};
use self::tls::Tls;
use crate::peers::{Budget, PeerKey, Short};
use crate::telemetry::Metrics;

/// How connections are accepted.
#[derive(Clone)]
pub struct Accepting {
    /// Connections open at once, in total and per peer. Listeners given clones of one budget
    /// (the gRPC port and the web face) share it: together they stay below the open-files
    /// limit.
    pub connections: Budget,
    /// Silent and idle peers are closed after these.
    pub deadlines: Deadlines,
    /// TLS, when configured.
    pub tls: Option<Arc<Tls>>,
    /// Over TLS, offer HTTP/1.1 besides HTTP/2 (the web face: browsers and simple clients).
    pub http1: bool,
}

/// File descriptors kept for the store, the snapshot, logs and the odd file, below the
/// open-files limit.
const RESERVED_FDS: u64 = 256;

/// Raises the open-files soft limit to the hard limit (as Go and nginx do at start) and returns
/// it, or `None` when it cannot be read.
pub fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-files limit");
            None
        }
    }
}

/// The connection limit that fits under an open-files limit.
pub fn connections_within(configured: usize, open_files: Option<u64>) -> usize {
    match open_files {
        Some(limit) => configured.min(limit.saturating_sub(RESERVED_FDS).max(16) as usize),
        None => configured,
    }
}

/// Accepts connections on `listener` until `stop`, yielding them to tonic.
pub fn incoming(
    listener: TcpListener,
    accepting: Accepting,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> ReceiverStream<Result<Conn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let connections = accepting.connections.clone();
    tokio::spawn(async move {
        let warn = Throttled::default();
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, addr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or memory: the listener stays readable, so
                    // accepting again at once would spin. Wait for connections to close.
                    warn.warn(|| tracing::warn!(error = %e, "accepting a connection failed"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let share = match connections.take(PeerKey::of(addr), 1) {
                Ok(share) => share,
                Err(short) => {
                    metrics.refused("connections");
                    warn.warn(|| refused(short, addr));
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let deadlines = accepting.deadlines;
            match &accepting.tls {
                None => {
                    if tx.send(Ok(Conn::plain(tcp, addr, share, deadlines))).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor =
                        if accepting.http1 { tls.web_acceptor() } else { tls.acceptor() };
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(deadlines.first_call, acceptor.accept(tcp)).await
                        {
                            Ok(Ok(stream)) => {
                                let _ =
                                    tx.send(Ok(Conn::tls(stream, addr, share, deadlines))).await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(peer = %addr, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

fn refused(short: Short, addr: std::net::SocketAddr) {
    match short {
        Short::Total(n) => tracing::warn!(
            limit = n,
            peer = %addr,
            "refusing connections: the registry has as many open as it allows (max_connections)"
        ),
        Short::Peer(n) => tracing::warn!(
            limit = n,
            peer = %PeerKey::of(addr),
            "refusing connections from a peer with as many open as one may have (max_connections_per_peer)"
        ),
    }
}

/// A warning at most every ten seconds, with the count of those left out, so that a flood of
/// refused connections does not become a flood of log lines.
#[derive(Default)]
struct Throttled {
    last: AtomicU64,
    skipped: AtomicU64,
    start: std::sync::OnceLock<Instant>,
}

impl Throttled {
    fn warn(&self, log: impl FnOnce()) {
        let start = *self.start.get_or_init(Instant::now);
        let now = start.elapsed().as_secs() + 10;
        let last = self.last.load(Ordering::Relaxed);
        if now >= last + 10
            && self.last.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            let skipped = self.skipped.swap(0, Ordering::AcqRel);
            if skipped > 0 {
                tracing::warn!(skipped, "similar warnings left out in the last ten seconds");
            }
            log();
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_stays_below_the_open_files_limit() {
        assert_eq!(connections_within(10_000, Some(1024)), 768);
        assert_eq!(connections_within(10_000, Some(1_048_576)), 10_000);
        assert_eq!(connections_within(10_000, None), 10_000);
        assert_eq!(connections_within(10_000, Some(100)), 16, "never none at all");
    }
}
