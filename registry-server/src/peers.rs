//! Who a peer is ([`Peer`], in every request's extensions, with its connection's [`Activity`]),
//! and shares of a limited resource (connections, calls in progress, request bytes in flight)
//! counted for everyone and for each peer, so that one address cannot take what the others need.
//!
//! A peer is an IPv4 address or an IPv6 /64 (one subscriber's usual allocation: counting single
//! IPv6 addresses would give an attacker 2^64 peers). Behind a TLS-terminating proxy every
//! connection comes from the proxy; the per-peer limits are then set to 0 (off) and the proxy
//! limits its clients.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// The unit the per-peer limits count by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerKey(IpAddr);

impl PeerKey {
    /// The peer of a remote address.
    pub fn of(addr: SocketAddr) -> Self {
        match addr.ip() {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => PeerKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    PeerKey(IpAddr::V6(prefix.into()))
                }
            },
            v4 => PeerKey(v4),
        }
    }
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
            v4 => write!(f, "{v4}"),
        }
    }
}

/// What the services may know of the other end of a connection (in each request's
/// extensions).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The remote address.
    pub addr: SocketAddr,
    /// The unit the per-peer limits count by.
    pub key: PeerKey,
    /// Whether the peer presented a client certificate that chains to the configured client CA
    /// (rustls refuses the handshake for any other certificate).
    pub client_certificate: bool,
    /// The connection's calls in progress, for the idle timeout.
    pub activity: Arc<Activity>,
}

/// Calls in progress on one connection and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    calls: AtomicUsize,
    /// Whether any call has begun.
    used: AtomicBool,
    opened: Instant,
    /// Milliseconds after `opened` when a call last began or ended.
    last_ms: AtomicU64,
}

impl Activity {
    /// The activity of a connection just accepted.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            used: AtomicBool::new(false),
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    /// Marks a call in progress until the guard drops.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.calls.fetch_add(1, Ordering::AcqRel);
        self.used.store(true, Ordering::Release);
        self.touch();
        Busy(self.clone())
    }

    /// Whether any call has begun on the connection.
    pub fn used(&self) -> bool {
        self.used.load(Ordering::Acquire)
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// When the connection became idle, or `None` while a call is in progress.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.calls.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.opened + Duration::from_millis(self.last_ms.load(Ordering::Acquire)))
    }
}

/// A call in progress on a connection.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A resource with a total and a per-peer cap (0: no cap). Cheap to clone; clones share counts.
#[derive(Debug, Clone)]
pub struct Budget {
    inner: Arc<Counts>,
}

#[derive(Debug)]
struct Counts {
    total: usize,
    per_peer: usize,
    used: AtomicUsize,
    by_peer: DashMap<PeerKey, usize, foldhash::fast::RandomState>,
}

/// Why a share was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Short {
    /// Everyone together is at the total.
    Total(usize),
    /// This peer is at its cap.
    Peer(usize),
}

impl Budget {
    /// A budget of `total` units, at most `per_peer` of them for one peer (0: no such cap).
    pub fn new(total: usize, per_peer: usize) -> Self {
        Self {
            inner: Arc::new(Counts {
                total,
                per_peer,
                used: AtomicUsize::new(0),
                by_peer: DashMap::default(),
            }),
        }
    }

    /// Takes `amount` units for `peer`, or says which cap is in the way. The share is given back
    /// when the returned guard drops.
    pub fn take(&self, peer: PeerKey, amount: usize) -> Result<Share, Short> {
        let c = &self.inner;
        let total = || {
            c.used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    (used + amount <= c.total).then_some(used + amount)
                })
                .map(|_| ())
                .map_err(|_| Short::Total(c.total))
        };
        if c.per_peer == 0 {
            total()?;
            return Ok(Share { budget: self.clone(), peer, amount });
        }
        // The peer's own cap first, under its entry's lock, and the total only then: a peer at
        // its cap never takes from the total, not even for an instant.
        let mut mine = c.by_peer.entry(peer).or_insert(0);
        let refused =
            if *mine + amount > c.per_peer { Some(Short::Peer(c.per_peer)) } else { total().err() };
        if let Some(short) = refused {
            let empty = *mine == 0;
            drop(mine);
            if empty {
                c.by_peer.remove_if(&peer, |_, n| *n == 0);
            }
            return Err(short);
        }
        *mine += amount;
        Ok(Share { budget: self.clone(), peer, amount })
    }

    /// Units in use by everyone.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    /// Units in use by `peer`, when per-peer caps are on.
    pub fn used_by(&self, peer: PeerKey) -> usize {
        self.inner.by_peer.get(&peer).map_or(0, |n| *n)
    }
}

/// A share of a [`Budget`], given back on drop.
#[derive(Debug)]
pub struct Share {
    budget: Budget,
    peer: PeerKey,
    amount: usize,
}

impl Drop for Share {
    fn drop(&mut self) {
        let c = &self.budget.inner;
        if c.per_peer > 0 {
            if let Some(mut mine) = c.by_peer.get_mut(&self.peer) {
                debug_assert!(*mine >= self.amount, "a share gives back more than its peer holds");
                *mine = mine.saturating_sub(self.amount);
            }
            // Peers that hold nothing are forgotten, so the table stays as small as the set of
            // peers with something in progress.
            c.by_peer.remove_if(&self.peer, |_, n| *n == 0);
        }
        c.used.fetch_sub(self.amount, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> PeerKey {
        PeerKey::of(s.parse().expect("a socket address"))
    }

    #[test]
    fn one_peer_cannot_take_what_the_others_need() {
        let budget = Budget::new(10, 4);
        let a: Vec<_> =
            (0..4).map(|_| budget.take(peer("192.0.2.1:1"), 1).expect("within")).collect();
        assert_eq!(budget.take(peer("192.0.2.1:2"), 1).unwrap_err(), Short::Peer(4));
        let b = budget.take(peer("192.0.2.2:1"), 4).expect("another peer has its own share");
        assert_eq!(budget.used(), 8);
        assert_eq!(budget.take(peer("192.0.2.3:1"), 3).unwrap_err(), Short::Total(10));
        assert_eq!(budget.used(), 8, "a refused share takes nothing");
        drop(a);
        assert_eq!(budget.used_by(peer("192.0.2.1:1")), 0);
        assert!(budget.take(peer("192.0.2.1:1"), 4).is_ok(), "shares come back on drop");
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(budget.inner.by_peer.is_empty(), "idle peers are forgotten");
    }

    #[test]
    fn without_a_per_peer_cap_only_the_total_counts() {
        let budget = Budget::new(2, 0);
        let _one = budget.take(peer("192.0.2.1:1"), 2).expect("within");
        assert_eq!(budget.take(peer("192.0.2.9:1"), 1).unwrap_err(), Short::Total(2));
    }

    #[test]
    fn an_ipv6_peer_is_its_64_prefix() {
        assert_eq!(peer("[2001:db8:1:2:aaaa::1]:5"), peer("[2001:db8:1:2:bbbb::9]:6"));
        assert_ne!(peer("[2001:db8:1:2::1]:5"), peer("[2001:db8:1:3::1]:5"));
        assert_eq!(peer("[::ffff:192.0.2.7]:1"), peer("192.0.2.7:2"));
        assert_eq!(peer("[2001:db8:1:2::1]:5").to_string(), "2001:db8:1:2::/64");
    }
}
