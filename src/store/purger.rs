//! The background purger: runs `purge()` when erasures are pending, at most
//! once per purge interval, and reports expiries on the change feed once
//! per interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Inner;
use super::worker::Worker;
use crate::error::Result;

/// Starts the background purger.
pub(crate) fn spawn(inner: Arc<Inner>, every: Duration) -> Result<Worker> {
    let signal = Arc::clone(&inner.purger_signal);
    Worker::spawn("shredstore-purger", signal, move || run(&inner, every))
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
