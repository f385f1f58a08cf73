//! The background purger: runs `purge()` when erasures are pending, at most
//! once per purge interval, and reports expiries on the change feed once
//! per interval.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::Inner;
use crate::error::Result;

/// Wakes a background thread (the purger on erase, the ledger runner on a
/// request) and tells it to stop.
#[derive(Default)]
pub(crate) struct Signal {
    stop: Mutex<bool>,
    cv: Condvar,
}

impl Signal {
    /// Wakes the purger. Takes the mutex so the wake-up cannot fall between
    /// the purger's check for pending work and its wait.
    pub(crate) fn notify(&self) {
        let _guard = self.stop.lock();
        self.cv.notify_all();
    }

    /// Tells the thread to stop.
    pub(crate) fn stop(&self) {
        *self.stop.lock() = true;
        self.cv.notify_all();
    }

    /// Sleeps up to `d` or until notified; whether a stop was asked.
    pub(crate) fn wait(&self, d: Duration) -> bool {
        let mut stop = self.stop.lock();
        if !*stop {
            self.cv.wait_for(&mut stop, d);
        }
        *stop
    }
}

pub(crate) struct Purger {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl Purger {
    pub(crate) fn spawn(inner: Arc<Inner>, every: Duration) -> Result<Purger> {
        let worker = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("shredstore-purger".into())
            .spawn(move || run(&worker, every))?;
        Ok(Purger {
            inner,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (an in-flight purge finishes first).
    pub(crate) fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.inner.purger_signal.stop();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("purger thread panicked");
        }
    }
}

impl Drop for Purger {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(inner: &Inner, every: Duration) {
    // Erasures left pending by a previous run are purged promptly.
    let mut last: Option<Instant> = None;
    // Expiry is reported on the change feed once per interval, the first
    // time right after open.
    let mut last_sweep: Option<Instant> = None;
    loop {
        let purge_now = {
            let mut stop = inner.purger_signal.stop.lock();
            if *stop {
                return;
            }
            let due = last.map_or(Duration::ZERO, |t| every.saturating_sub(t.elapsed()));
            let sweep_due =
                last_sweep.map_or(Duration::ZERO, |t| every.saturating_sub(t.elapsed()));
            let purge_now = inner.has_pending() && due.is_zero();
            if !purge_now && !sweep_due.is_zero() {
                // Sleep until the next purge or sweep is due; an erase or
                // stop wakes us early.
                let wait = if inner.has_pending() {
                    due.min(sweep_due)
                } else {
                    sweep_due
                };
                inner.purger_signal.cv.wait_for(&mut stop, wait);
                continue;
            }
            purge_now
        };
        if purge_now {
            last = Some(Instant::now());
            match inner.purge("purger") {
                Ok(report) if !report.complete => {
                    tracing::warn!("background purge incomplete; retrying next interval");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "background purge failed"),
            }
        } else {
            last_sweep = Some(Instant::now());
            let interrupt = || *inner.purger_signal.stop.lock() || inner.has_pending();
            if let Err(e) = inner.report_expiries(&interrupt) {
                tracing::error!(error = %e, "reporting expiries on the change feed failed");
            }
        }
    }
}
