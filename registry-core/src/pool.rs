//! One shared copy of the strings many key records repeat (a fleet's manufacturer and model).
//!
//! A registry of millions of keys names a few hundred manufacturers and models; a copy of each
//! in every record was memory per key for nothing. Records kept for the life of the server (the
//! key cache's) swap their strings for the pooled copy. The pool only grows, so it stops taking
//! new strings at [`LIMIT`]: past it, strings stay unshared, which costs memory but is still
//! correct.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};

/// The most distinct strings the process-wide pool holds.
pub const LIMIT: usize = 1 << 16;

static POOL: LazyLock<Mutex<Pool>> = LazyLock::new(|| Mutex::new(Pool::new(LIMIT)));

/// The process-wide pooled copy of `s`, adding it if the pool has room; `s` itself otherwise.
pub fn shared(s: &Arc<str>) -> Arc<str> {
    // A poisoned lock means a panic while inserting into a set of strings: the set is whole.
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).shared(s)
}

/// A set of shared strings that takes at most `limit`.
struct Pool {
    strings: HashSet<Arc<str>>,
    limit: usize,
}

impl Pool {
    fn new(limit: usize) -> Self {
        Self { strings: HashSet::new(), limit }
    }

    fn shared(&mut self, s: &Arc<str>) -> Arc<str> {
        if let Some(pooled) = self.strings.get(&**s) {
            return pooled.clone();
        }
        if self.strings.len() < self.limit {
            self.strings.insert(s.clone());
        }
        s.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(s: &str) -> Arc<str> {
        s.into()
    }

    #[test]
    fn equal_strings_come_back_as_one_copy() {
        let (a, b) = (fresh("pool test: Acme Meters GmbH"), fresh("pool test: Acme Meters GmbH"));
        assert!(!Arc::ptr_eq(&a, &b));
        let (a, b) = (shared(&a), shared(&b));
        assert!(Arc::ptr_eq(&a, &b), "the second is the first one's copy");
        assert_eq!(&*b, "pool test: Acme Meters GmbH");
    }

    #[test]
    fn a_full_pool_still_shares_what_it_holds_and_leaves_new_strings_alone() {
        let mut pool = Pool::new(2);
        let (a, b) = (pool.shared(&fresh("a")), pool.shared(&fresh("b")));
        let c = fresh("c");
        assert!(Arc::ptr_eq(&pool.shared(&c), &c), "no room: c is its own copy");
        assert!(!Arc::ptr_eq(&pool.shared(&fresh("c")), &c), "and was not taken in");
        assert!(Arc::ptr_eq(&pool.shared(&fresh("a")), &a));
        assert!(Arc::ptr_eq(&pool.shared(&fresh("b")), &b));
        assert_eq!(pool.strings.len(), 2);
    }
}
