//! A per-peer budget of signature checks that fail.
//!
//! Checking a command's signature costs the registry an ECDSA verification (about 65 µs here);
//! sending one costs the attacker nothing, since signer key IDs are public in the log. Good
//! signatures spend nothing: an operator loading 100,000 keys pays nothing. Each signature that
//! fails spends one unit of its peer's budget (a GCRA from `governor`: a steady rate with a
//! burst); once it is spent, all of that peer's commands, good ones too, are refused with
//! `RESOURCE_EXHAUSTED` before any signature is checked (by the admission layer, before the
//! call's body is read or decoded) until the next unit is due, so a flood gets at most the
//! steady rate of checks. A bulk call stops checking where its budget runs out, so one call
//! cannot spend more than the budget either. Peers sharing an address (NAT, one IPv6 /64) share
//! a budget: an operator behind the same address as an attacker waits with it.

use std::num::NonZeroU32;
use std::time::Instant;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::commands::SignatureGate;
use crate::peers::PeerKey;

/// The budgets of all peers.
pub struct SignatureBudget {
    limiter: DefaultKeyedRateLimiter<PeerKey>,
    clock: DefaultClock,
    /// Peers whose budget is spent, until when.
    spent: DashMap<PeerKey, Instant, foldhash::fast::RandomState>,
}

impl SignatureBudget {
    /// `per_second` failed checks per peer with bursts of `burst`; `None` when `per_second` is
    /// 0 (no budget).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
            spent: DashMap::default(),
        })
    }

    /// The gate of one peer, for one call.
    pub fn gate(self: &std::sync::Arc<Self>, peer: PeerKey) -> PeerGate {
        PeerGate { budget: self.clone(), peer }
    }

    /// Forgets peers whose budget is full again; run now and then so the table stays small.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        let now = Instant::now();
        self.spent.retain(|_, until| *until > now);
    }

    /// Whether `peer` may still have a signature checked: the cheap check the admission layer
    /// makes before a command call's body is even read.
    pub fn open(&self, peer: PeerKey) -> bool {
        let now = Instant::now();
        // Forget a deadline that has passed, in one step: a new one `spend` inserts meanwhile
        // stays.
        self.spent.remove_if(&peer, |_, until| *until <= now);
        !self.spent.contains_key(&peer)
    }

    fn spend(&self, peer: PeerKey) {
        if let Err(not_until) = self.limiter.check_key(&peer) {
            let wait = not_until.wait_time_from(self.clock.now());
            self.spent.insert(peer, Instant::now() + wait);
        }
    }
}

/// One peer's view of the budget.
#[derive(Clone)]
pub struct PeerGate {
    budget: std::sync::Arc<SignatureBudget>,
    peer: PeerKey,
}

impl SignatureGate for PeerGate {
    fn may_check(&self) -> bool {
        self.budget.open(self.peer)
    }

    fn failed(&self) {
        self.budget.spend(self.peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn peer(s: &str) -> PeerKey {
        PeerKey::of(s.parse().expect("a socket address"))
    }

    #[test]
    fn a_peer_that_spends_its_budget_is_refused_before_checking_and_others_are_not() {
        let budget = Arc::new(SignatureBudget::new(1, 3).expect("a budget"));
        let attacker = budget.gate(peer("192.0.2.66:1"));
        let operator = budget.gate(peer("192.0.2.7:1"));
        let mut checked = 0;
        for _ in 0..100 {
            if attacker.may_check() {
                checked += 1;
                attacker.failed();
            }
        }
        assert!((3..=4).contains(&checked), "the burst, then nothing: {checked}");
        assert!(!attacker.may_check());
        assert!(operator.may_check(), "another peer keeps its budget");
    }

    #[test]
    fn no_rate_means_no_budget() {
        assert!(SignatureBudget::new(0, 10).is_none());
    }
}
