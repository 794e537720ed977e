//! Failed-authentication limiting per client address: after `limit` failures
//! within a minute, the address is answered 429 until its window ends.
//! Successful requests are never counted. Memory is bounded: at most
//! `MAX_TRACKED` addresses are tracked (IPv6 clients by their /64).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
const MAX_TRACKED: u64 = 100_000;

#[derive(Debug)]
struct Window {
    started: Instant,
    failures: AtomicU32,
}

impl Window {
    fn seconds_left(&self) -> u64 {
        WINDOW.saturating_sub(self.started.elapsed()).as_secs() + 1
    }
}

pub struct FailureLimiter {
    limit: u32,
    windows: moka::sync::Cache<IpAddr, Arc<Window>>,
}

impl std::fmt::Debug for FailureLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// One IPv6 host usually owns a whole /64, so that is what is counted.
fn bucket(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

impl FailureLimiter {
    #[must_use]
    pub fn new(limit: u32) -> Self {
        Self::with_capacity(limit, MAX_TRACKED)
    }

    /// A limiter tracking at most `capacity` addresses; past that the least
    /// useful windows are dropped, so a flood of rotating addresses cannot
    /// exhaust memory.
    #[must_use]
    pub fn with_capacity(limit: u32, capacity: u64) -> Self {
        Self {
            limit,
            windows: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(WINDOW)
                .build(),
        }
    }

    /// Addresses currently tracked.
    #[must_use]
    pub fn tracked(&self) -> u64 {
        self.windows.run_pending_tasks();
        self.windows.entry_count()
    }

    /// `Err(seconds)` when `addr` must wait before trying again.
    pub fn check(&self, addr: IpAddr) -> Result<(), u64> {
        match self.windows.get(&bucket(addr)) {
            Some(window) if window.failures.load(Ordering::Acquire) >= self.limit => {
                Err(window.seconds_left())
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed attempt from `addr`. `Err(seconds)` when the
    /// attempt was past the limit and must be answered "too many" rather
    /// than as a failure: concurrent attempts are numbered atomically, so at
    /// most `limit` of them in a window are ever answered as failures, however
    /// many were checked at the same moment.
    pub fn record_failure(&self, addr: IpAddr) -> Result<(), u64> {
        let window = self.windows.get_with(bucket(addr), || {
            Arc::new(Window {
                started: Instant::now(),
                failures: AtomicU32::new(0),
            })
        });
        let earlier = window.failures.fetch_add(1, Ordering::AcqRel);
        if earlier >= self.limit {
            Err(window.seconds_left())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_th_failure_blocks_the_address_and_no_other() {
        let limiter = FailureLimiter::new(3);
        let (a, b): (IpAddr, IpAddr) = (
            "192.0.2.1".parse().expect("ip"),
            "192.0.2.2".parse().expect("ip"),
        );
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
            assert!(limiter.record_failure(a).is_ok());
        }
        let wait = limiter.check(a).expect_err("blocked");
        assert!((1..=60).contains(&wait));
        assert!(limiter.check(b).is_ok());
    }

    #[test]
    fn concurrent_failures_past_the_limit_are_answered_too_many() {
        let limiter = Arc::new(FailureLimiter::new(20));
        let client: IpAddr = "192.0.2.9".parse().expect("ip");
        // 150 attempts checked at once, all before any failure is counted.
        assert!((0..150).all(|_| limiter.check(client).is_ok()));
        let answered_as_failures = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..6)
                .map(|_| {
                    let limiter = Arc::clone(&limiter);
                    scope.spawn(move || {
                        (0..25)
                            .filter(|_| limiter.record_failure(client).is_ok())
                            .count()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().expect("worker"))
                .sum::<usize>()
        });
        assert_eq!(answered_as_failures, 20);
    }

    #[test]
    fn a_flood_of_distinct_addresses_stays_within_the_memory_bound() {
        let limiter = FailureLimiter::with_capacity(20, 1_000);
        for i in 0..20_000u32 {
            let _ = limiter.record_failure(IpAddr::V4(i.into()));
        }
        assert!(limiter.tracked() <= 1_000, "tracked {}", limiter.tracked());
        // The bound costs forgetting, never blocking a fresh address.
        assert!(limiter.check("203.0.113.77".parse().expect("ip")).is_ok());
    }

    #[test]
    fn addresses_of_one_ipv6_64_share_a_window() {
        let limiter = FailureLimiter::new(1);
        let _ = limiter.record_failure("2001:db8::1".parse().expect("ip"));
        assert!(
            limiter
                .check("2001:db8::ffff".parse().expect("ip"))
                .is_err()
        );
        assert!(
            limiter
                .check("2001:db8:0:1::1".parse().expect("ip"))
                .is_ok()
        );
    }
}
