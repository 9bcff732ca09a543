//! How many client connections each listener holds, so no client of one listener
//! can take the file descriptors the other needs: a read-API flood must never stop
//! the capture of agents.
//!
//! - At start the open-file limit is raised to its hard limit where allowed.
//! - The descriptors are then shared out (`ConnBudget`): a reserve for the store,
//!   the capture log and the database pool; the read API a bounded share; the
//!   proxy the rest, two descriptors per connection (client and upstream).
//! - A listener whose connections are all taken stops accepting (`Slots::admit`
//!   waits): new clients wait in the kernel's accept queue, holding no descriptor
//!   of ours, instead of making `accept` fail with EMFILE for everyone.
//! - The read API also caps connections per client address; one over it is closed
//!   at once and counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept for everything that is not a client connection: sled's and
/// the log's files, attachments being written, the database pool, OTLP export.
pub const RESERVED_FDS: u64 = 128;
/// Default read-API connections per client address: a browser opens six per host,
/// a few tabs and a CLI stay well under it.
pub const API_PER_ADDRESS: usize = 64;
/// The read API's default share of the budget is at most this many connections.
pub const API_MAX_DEFAULT: usize = 1024;

/// Raises the soft open-file limit to the hard one (capped at 1M) and returns the
/// limit in force.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read the struct we pass; no other memory.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        let wanted = limit.rlim_max.min(1 << 20);
        if wanted > limit.rlim_cur {
            let raised = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = wanted;
            }
        }
    }
    limit.rlim_cur
}

/// Connections each listener may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnBudget {
    pub proxy: usize,
    pub api: usize,
    pub api_per_address: usize,
}

impl ConnBudget {
    /// Shares `open_files` out: the configured caps where set, else the read API
    /// an eighth (at most `API_MAX_DEFAULT`), the proxy half of what is left (two
    /// descriptors per proxied call).
    pub fn new(
        open_files: u64,
        proxy: Option<usize>,
        api: Option<usize>,
        api_per_address: Option<usize>,
    ) -> ConnBudget {
        let free = open_files.saturating_sub(RESERVED_FDS).max(64) as usize;
        let api = api.unwrap_or_else(|| (free / 8).clamp(8, API_MAX_DEFAULT));
        let proxy = proxy.unwrap_or_else(|| (free.saturating_sub(api) / 2).max(16));
        ConnBudget {
            proxy,
            api,
            api_per_address: api_per_address.unwrap_or(API_PER_ADDRESS).min(api).max(1),
        }
    }
}

/// The connections one listener holds: a cap on all of them, and optionally one
/// per client address.
pub struct Slots {
    all: Arc<Semaphore>,
    per_address: Option<(usize, Mutex<HashMap<IpAddr, usize>>)>,
    /// Connections closed at once because their address held its share.
    pub refused: AtomicU64,
    pub capacity: usize,
}

/// One admitted connection; gives its slot back when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    address: Option<(Arc<Slots>, IpAddr)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((slots, ip)) = self.address.take() {
            if let Some((_, map)) = &slots.per_address {
                let mut map = match map.lock() {
                    Ok(m) => m,
                    Err(p) => p.into_inner(),
                };
                if let Some(n) = map.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        map.remove(&ip);
                    }
                }
            }
        }
    }
}

impl Slots {
    pub fn new(capacity: usize, per_address: Option<usize>) -> Arc<Slots> {
        Arc::new(Slots {
            all: Arc::new(Semaphore::new(capacity)),
            per_address: per_address.map(|n| (n, Mutex::new(HashMap::new()))),
            refused: AtomicU64::new(0),
            capacity,
        })
    }

    /// Waits until the listener may hold one more connection: call before
    /// `accept`, so a full listener leaves new clients in the kernel's queue.
    pub async fn reserve(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(permit) = self.all.clone().acquire_owned().await {
                return permit;
            }
            // The semaphore is never closed; yield rather than spin if it were.
            tokio::task::yield_now().await;
        }
    }

    /// Admits an accepted connection from `ip` with its reserved permit, or
    /// `None` when that address holds its share (the caller closes it).
    pub fn admit(self: &Arc<Self>, permit: OwnedSemaphorePermit, ip: IpAddr) -> Option<Slot> {
        let Some((cap, map)) = &self.per_address else {
            return Some(Slot {
                _permit: permit,
                address: None,
            });
        };
        let mut map = match map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let held = map.entry(ip).or_insert(0);
        if *held >= *cap {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *held += 1;
        Some(Slot {
            _permit: permit,
            address: Some((self.clone(), ip)),
        })
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        self.capacity - self.all.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_the_proxy_most_descriptors() {
        let b = ConnBudget::new(20_000, None, None, None);
        assert_eq!(b.api, 1024);
        assert_eq!(b.proxy, (20_000 - 128 - 1024) / 2);
        assert_eq!(b.api_per_address, 64);
        let small = ConnBudget::new(256, None, None, None);
        assert_eq!(small.api, 16);
        assert_eq!(small.proxy, 56);
        assert_eq!(small.api_per_address, 16);
        let set = ConnBudget::new(256, Some(10), Some(5), Some(2));
        assert_eq!((set.proxy, set.api, set.api_per_address), (10, 5, 2));
    }

    #[tokio::test]
    async fn an_address_over_its_share_is_refused_and_its_slots_come_back() {
        let slots = Slots::new(4, Some(2));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = slots.admit(slots.reserve().await, a).unwrap();
        let _second = slots.admit(slots.reserve().await, a).unwrap();
        assert!(slots.admit(slots.reserve().await, a).is_none());
        assert_eq!(slots.refused.load(Ordering::Relaxed), 1);
        let _other = slots.admit(slots.reserve().await, b).unwrap();
        assert_eq!(slots.open(), 3);
        drop(first);
        assert!(slots.admit(slots.reserve().await, a).is_some());
    }
}
