//! The background work of a running instance: the periodic usage flush,
//! the stop signals, and the retried final flush.

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use cola_application::{ApiKeyRepository, UsageRecorder};
use tokio::sync::watch;

/// How long in-flight requests may run after a shutdown signal.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Attempts at the final usage flush, and the wait before the second; each
/// later wait doubles. A flush fails when the database is briefly away (a
/// failover, a restarting pooler): retrying at once would fail the same way.
const FINAL_FLUSH_ATTEMPTS: u32 = 3;
const FINAL_FLUSH_BACKOFF: Duration = Duration::from_millis(250);

/// Writes every pending usage count, retried with backoff; failures are
/// logged, since the process is stopping anyway.
pub(super) async fn final_flush(usage: &UsageRecorder, repository: &dyn ApiKeyRepository) {
    let _ = retry_with_backoff(
        FINAL_FLUSH_ATTEMPTS,
        FINAL_FLUSH_BACKOFF,
        tokio::time::sleep,
        |attempt| async move {
            let flushed = usage.flush(repository).await;
            if let Err(error) = &flushed {
                tracing::error!(error = %cola_application::error_chain(error), attempt, pending = usage.pending(), "final usage flush failed");
            }
            flushed
        },
    )
    .await;
}

/// Runs `operation` (given the attempt's number, from 1) up to `attempts`
/// times until it succeeds, sleeping `first_wait` after the first failure and
/// twice as long after each later one; the last outcome. `sleep` is
/// `tokio::time::sleep`, or a recorder in tests.
async fn retry_with_backoff<T, E, S, F, Fut>(
    attempts: u32,
    first_wait: Duration,
    sleep: impl Fn(Duration) -> S,
    mut operation: F,
) -> Result<T, E>
where
    S: std::future::Future<Output = ()>,
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut wait = first_wait;
    let mut attempt = 1;
    loop {
        let outcome = operation(attempt).await;
        if outcome.is_ok() || attempt >= attempts {
            return outcome;
        }
        sleep(wait).await;
        wait = wait.saturating_mul(2);
        attempt += 1;
    }
}

/// The stop signals, registered with the OS.
#[cfg(unix)]
pub(super) struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    pub(super) fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// The first signal's name, and whether it asks for a graceful stop.
    async fn first(&mut self) -> (&'static str, bool) {
        tokio::select! {
            _ = self.interrupt.recv() => ("SIGINT", true),
            _ = self.terminate.recv() => ("SIGTERM", true),
            _ = self.quit.recv() => ("SIGQUIT", false),
        }
    }
}

/// Elsewhere only Ctrl-C can be awaited.
#[cfg(not(unix))]
pub(super) struct Signals;

#[cfg(not(unix))]
impl Signals {
    #[allow(clippy::unnecessary_wraps)]
    pub(super) fn install() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn first(&mut self) -> (&'static str, bool) {
        let _ = tokio::signal::ctrl_c().await;
        ("Ctrl-C", true)
    }
}

/// Stops the server at the first signal: gracefully on SIGINT (Ctrl-C, and
/// what some supervisors send) as on SIGTERM, so that no admitted request is
/// dropped, and at once on SIGQUIT, for an operator who will not wait.
pub(super) async fn stop_on_signal(mut signals: Signals, server: ServerHandle) {
    let (name, graceful) = signals.first().await;
    if graceful {
        tracing::info!(
            signal = name,
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "stopping: finishing in-flight requests"
        );
    } else {
        tracing::warn!(
            signal = name,
            "stopping at once: in-flight requests are dropped"
        );
    }
    server.stop(graceful).await;
}

pub(super) async fn flush_usage_periodically(
    usage: Arc<UsageRecorder>,
    repository: Arc<dyn ApiKeyRepository>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if let Err(error) = usage.flush(repository.as_ref()).await {
            tracing::warn!(error = %cola_application::error_chain(&error), pending = usage.pending(), "usage flush failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Runs `retry_with_backoff` on an operation that fails `failures` times;
    /// returns the outcome, the attempts made and the waits asked for.
    async fn retried(failures: u32) -> (Result<u32, u32>, u32, Vec<Duration>) {
        let waits = RefCell::new(Vec::new());
        let mut calls = 0;
        let outcome = retry_with_backoff(
            FINAL_FLUSH_ATTEMPTS,
            FINAL_FLUSH_BACKOFF,
            |wait| {
                waits.borrow_mut().push(wait);
                std::future::ready(())
            },
            |attempt| {
                calls += 1;
                std::future::ready(if attempt > failures {
                    Ok(attempt)
                } else {
                    Err(attempt)
                })
            },
        )
        .await;
        (outcome, calls, waits.into_inner())
    }

    #[tokio::test]
    async fn the_final_flush_waits_longer_between_each_attempt() {
        let (ms250, ms500) = (Duration::from_millis(250), Duration::from_millis(500));
        assert_eq!(retried(0).await, (Ok(1), 1, vec![]));
        assert_eq!(retried(1).await, (Ok(2), 2, vec![ms250]));
        assert_eq!(retried(2).await, (Ok(3), 3, vec![ms250, ms500]));
        // No wait after the last attempt: nothing follows it.
        assert_eq!(retried(5).await, (Err(3), 3, vec![ms250, ms500]));
    }
}
