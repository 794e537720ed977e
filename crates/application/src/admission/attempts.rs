//! Attempts to present a credential, per party that presents them: after
//! `limit` failures within a minute the party is answered "too many" until
//! its window ends. Successful attempts are never counted.
//!
//! Work that a caller who is not yet authenticated makes Cola do (argon2 on
//! a presented key) is paid for in advance: an [`Attempt`] is taken before
//! the work starts and counts against the party's limit while it runs. It
//! is refunded only when the key turns out good; an attempt that fails, or
//! that is abandoned half-way (a client that resets its connection while
//! argon2 runs), stays counted. So one party can never have more than
//! `limit` verifications under way or failed in a window, whatever it does
//! with its connections.
//!
//! Memory is bounded: at most [`MAX_TRACKED`] parties are tracked (IPv6
//! clients by their /64), and a flood of rotating parties costs forgetting,
//! never blocking a fresh one.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cola_domain::ServerId;

const WINDOW: Duration = Duration::from_secs(60);
const MAX_TRACKED: u64 = 100_000;

/// Who is charged for an attempt. Only what Cola itself observed names a
/// party — the TCP peer (or a trusted proxy's word for it) and a server
/// token Cola verified — never an address a caller merely names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    /// A client address, IPv6 by its /64.
    Address(IpAddr),
    /// A tenant's server, by the verification token it presented and the
    /// address it calls from (IPv6 by its /64).
    Server(ServerId, IpAddr),
}

/// Who one attempt is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// A client presenting its own credential (`/mcp`, the gateway, the
    /// management API, a leak report).
    Client(IpAddr),
    /// A server asking about its client's key (the verify API): charged to
    /// the server as the token it presented from the address it calls from.
    /// Not to that address alone, which would lock the server's host out of
    /// `/mcp` for its clients' mistakes, nor to the token alone, which one
    /// host's mistakes would then lock out on every other host.
    Server { server: ServerId, address: IpAddr },
}

impl Charge {
    fn party(self) -> Party {
        match self {
            Self::Client(address) => Party::Address(bucket(address)),
            Self::Server { server, address } => Party::Server(server, bucket(address)),
        }
    }
}

/// One IPv6 host usually owns a whole /64, so that is what is counted.
fn bucket(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// How long to wait before trying again, in whole seconds (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyAttempts {
    pub retry_after_secs: u64,
}

/// One party's minute: failures in the high half of `counts`, attempts in
/// flight in the low half, so that "is there room" and "take it" are one
/// atomic step.
#[derive(Debug)]
struct Window {
    started: Instant,
    counts: AtomicU64,
}

const ONE_FAILURE: u64 = 1 << 32;
const ONE_IN_FLIGHT: u64 = 1;

fn failures(counts: u64) -> u64 {
    counts >> 32
}

fn in_flight(counts: u64) -> u64 {
    counts & (ONE_FAILURE - 1)
}

impl Window {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            counts: AtomicU64::new(0),
        }
    }

    /// Until the window ends when its failures fill it; a second when only
    /// attempts in flight do, which end soon either way.
    fn wait(&self, counts: u64, limit: u64) -> TooManyAttempts {
        let retry_after_secs = if failures(counts) >= limit {
            WINDOW.saturating_sub(self.started.elapsed()).as_secs() + 1
        } else {
            1
        };
        TooManyAttempts { retry_after_secs }
    }
}

pub struct AttemptLimiter {
    limit: u64,
    windows: moka::sync::Cache<Party, Arc<Window>>,
    /// Attempts under way, every party together (for the metrics).
    in_flight: Arc<AtomicU64>,
}

impl std::fmt::Debug for AttemptLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl AttemptLimiter {
    #[must_use]
    pub fn new(limit: u32) -> Self {
        Self::with_capacity(limit, MAX_TRACKED)
    }

    /// A limiter tracking at most `capacity` parties; past that the least
    /// useful windows are dropped.
    #[must_use]
    pub fn with_capacity(limit: u32, capacity: u64) -> Self {
        Self {
            limit: u64::from(limit),
            windows: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(WINDOW)
                .build(),
            in_flight: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Attempts under way now (paid for, not yet settled).
    #[must_use]
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Parties currently tracked.
    #[must_use]
    pub fn tracked(&self) -> u64 {
        self.windows.run_pending_tasks();
        self.windows.entry_count()
    }

    fn window(&self, party: Party) -> Arc<Window> {
        self.windows.get_with(party, || Arc::new(Window::new()))
    }

    /// Whether `charge` may try at all: `Err` once any of its parties has
    /// failed `limit` times in its window. Attempts in flight do not block
    /// here (a key that needs no work, being remembered, costs nothing).
    pub fn check(&self, charge: Charge) -> Result<(), TooManyAttempts> {
        match self.windows.get(&charge.party()) {
            Some(window) => {
                let counts = window.counts.load(Ordering::Acquire);
                if failures(counts) >= self.limit {
                    Err(window.wait(counts, self.limit))
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    /// Counts one failure that cost no work (a malformed key, a key already
    /// known to be bad). Attempts are numbered atomically, those in flight
    /// included, so at most `limit` attempts of a window are ever answered
    /// as failures however many arrive at once: `Err` for one past it,
    /// which is answered "too many" instead.
    pub fn record_failure(&self, charge: Charge) -> Result<(), TooManyAttempts> {
        let window = self.window(charge.party());
        let earlier = window.counts.fetch_add(ONE_FAILURE, Ordering::AcqRel);
        if failures(earlier) + in_flight(earlier) >= self.limit {
            Err(window.wait(earlier + ONE_FAILURE, self.limit))
        } else {
            Ok(())
        }
    }

    /// Takes an attempt for `charge` before work is done on its behalf:
    /// `Err` when a party's failures and attempts in flight already fill its
    /// limit. The attempt counts as a failure unless it is settled as a
    /// success (see [`Attempt`]).
    pub fn begin(self: &Arc<Self>, charge: Charge) -> Result<Attempt, TooManyAttempts> {
        let window = self.window(charge.party());
        window
            .counts
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |counts| {
                (failures(counts) + in_flight(counts) < self.limit)
                    .then_some(counts + ONE_IN_FLIGHT)
            })
            .map_err(|counts| window.wait(counts, self.limit))?;
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(Attempt {
            window: Some(window),
            counted: Some(Arc::clone(&self.in_flight)),
            settled: false,
        })
    }
}

/// An attempt under way, counted against its party while it runs. Settled
/// with [`Attempt::succeeded`] it is refunded; settled with
/// [`Attempt::failed`], or dropped unsettled (the request was abandoned),
/// it becomes one failure of the party.
#[derive(Debug)]
#[must_use = "an attempt dropped unsettled counts as a failure"]
pub struct Attempt {
    /// The charged party's window (none for an authenticated caller). A
    /// window that expired meanwhile is settled all the same: what it counts
    /// no longer limits anyone.
    window: Option<Arc<Window>>,
    /// The limiter's count of attempts under way, which this one is in.
    counted: Option<Arc<AtomicU64>>,
    settled: bool,
}

impl Attempt {
    /// An attempt of a caller who has already proved who it is (a signed
    /// secret-scanning alert): it charges nobody.
    pub fn of_authenticated_caller() -> Self {
        Self {
            window: None,
            counted: None,
            settled: false,
        }
    }

    /// The credential was good: the attempt is not counted.
    pub fn succeeded(mut self) {
        self.settle(0);
    }

    /// The credential was bad: one failure of the party.
    pub fn failed(mut self) {
        self.settle(ONE_FAILURE);
    }

    fn settle(&mut self, failure: u64) {
        if self.settled {
            return;
        }
        self.settled = true;
        if let Some(counted) = &self.counted {
            counted.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(window) = &self.window {
            // Never underflows: this attempt's own unit is in flight.
            let delta = failure.wrapping_sub(ONE_IN_FLIGHT);
            window.counts.fetch_add(delta, Ordering::AcqRel);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.settled {
            if self.window.is_some() {
                tracing::info!(
                    "an attempt was abandoned before it was decided; it counts as a failure"
                );
            }
            self.settle(ONE_FAILURE);
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn address(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn client(text: &str) -> Charge {
        Charge::Client(address(text))
    }

    #[test]
    fn the_limit_th_failure_blocks_the_address_and_no_other() {
        let limiter = AttemptLimiter::new(3);
        for _ in 0..3 {
            assert!(limiter.check(client("192.0.2.1")).is_ok());
            assert!(limiter.record_failure(client("192.0.2.1")).is_ok());
        }
        let wait = limiter.check(client("192.0.2.1")).expect_err("blocked");
        assert!((1..=60).contains(&wait.retry_after_secs));
        assert!(limiter.check(client("192.0.2.2")).is_ok());
    }

    #[test]
    fn concurrent_failures_past_the_limit_are_answered_too_many() {
        let limiter = Arc::new(AttemptLimiter::new(20));
        let charge = client("192.0.2.9");
        // 150 attempts checked at once, all before any failure is counted.
        assert!((0..150).all(|_| limiter.check(charge).is_ok()));
        let answered_as_failures = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..6)
                .map(|_| {
                    let limiter = Arc::clone(&limiter);
                    scope.spawn(move || {
                        (0..25)
                            .filter(|_| limiter.record_failure(charge).is_ok())
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
    fn attempts_in_flight_fill_the_limit_so_no_more_work_starts() {
        let limiter = Arc::new(AttemptLimiter::new(20));
        let charge = client("192.0.2.10");
        let under_way: Vec<Attempt> = (0..20)
            .map(|_| limiter.begin(charge).expect("room"))
            .collect();
        // The 21st attempt of the address waits, and so does a failure
        // that needs no work: the attempts under way may all fail.
        assert_eq!(
            limiter.begin(charge).map(drop),
            Err(TooManyAttempts {
                retry_after_secs: 1
            })
        );
        assert!(limiter.record_failure(charge).is_err());
        // Another address is not held up.
        assert!(limiter.begin(client("192.0.2.11")).is_ok_and(|a| {
            a.succeeded();
            true
        }));
        // Good keys are refunded, and room comes back.
        for attempt in under_way {
            attempt.succeeded();
        }
        let attempt = limiter.begin(charge).expect("room again");
        attempt.succeeded();
    }

    #[test]
    fn an_abandoned_attempt_counts_as_a_failure() {
        let limiter = Arc::new(AttemptLimiter::new(2));
        let charge = client("192.0.2.12");
        drop(limiter.begin(charge).expect("room"));
        limiter.begin(charge).expect("room").failed();
        let wait = limiter.check(charge).expect_err("two failures");
        assert!(wait.retry_after_secs > 1);
    }

    #[test]
    fn a_server_is_charged_as_its_token_from_its_address_never_as_a_client() {
        let limiter = Arc::new(AttemptLimiter::new(2));
        let server = ServerId::from_uuid(Uuid::from_u128(7));
        let at = address("198.51.100.1");
        let charge = Charge::Server {
            server,
            address: at,
        };
        limiter.begin(charge).expect("room").failed();
        limiter.begin(charge).expect("room").failed();
        assert!(limiter.check(charge).is_err());
        // The host's own requests as a client are not blocked by it …
        assert!(limiter.check(Charge::Client(at)).is_ok());
        // … nor another server of the same host.
        let other = ServerId::from_uuid(Uuid::from_u128(8));
        assert!(
            limiter
                .check(Charge::Server {
                    server: other,
                    address: at
                })
                .is_ok()
        );
    }

    #[test]
    fn a_flood_of_distinct_addresses_stays_within_the_memory_bound() {
        let limiter = AttemptLimiter::with_capacity(20, 1_000);
        for i in 0..20_000u32 {
            let _ = limiter.record_failure(Charge::Client(IpAddr::V4(i.into())));
        }
        assert!(limiter.tracked() <= 1_000, "tracked {}", limiter.tracked());
        assert!(limiter.check(client("203.0.113.77")).is_ok());
    }

    #[test]
    fn addresses_of_one_ipv6_64_share_a_window() {
        let limiter = AttemptLimiter::new(1);
        let _ = limiter.record_failure(client("2001:db8::1"));
        assert!(limiter.check(client("2001:db8::ffff")).is_err());
        assert!(limiter.check(client("2001:db8:0:1::1")).is_ok());
    }
}
