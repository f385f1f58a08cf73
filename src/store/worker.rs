//! The store's background threads (the purger, the root-key rotation, the
//! erasure ledger's runner): a [`Signal`] wakes one and tells it to stop; a
//! [`Worker`] owns the thread and stops and joins it on `stop` or drop.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::Result;

/// Wakes a background thread (the purger on erase, the ledger runner on a
/// request) and tells it to stop.
#[derive(Default)]
pub(crate) struct Signal {
    pub(super) stop: Mutex<bool>,
    pub(super) cv: Condvar,
}

impl Signal {
    /// Wakes the thread. Takes the mutex so the wake-up cannot fall between
    /// the thread's check for work and its wait.
    pub(crate) fn notify(&self) {
        let _guard = self.stop.lock();
        self.cv.notify_all();
    }

    /// Tells the thread to stop.
    pub(crate) fn stop(&self) {
        *self.stop.lock() = true;
        self.cv.notify_all();
    }

    /// Whether a stop was asked.
    pub(crate) fn stopped(&self) -> bool {
        *self.stop.lock()
    }

    /// Sleeps up to `d` or until notified; whether a stop was asked.
    pub(crate) fn wait(&self, d: Duration) -> bool {
        let mut stop = self.stop.lock();
        if !*stop && !d.is_zero() {
            self.cv.wait_for(&mut stop, d);
        }
        *stop
    }
}

/// A named background thread that runs until its signal says stop.
pub(crate) struct Worker {
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Spawns `body` as thread `name`; `body` returns once `signal` says
    /// stop (or earlier, when its work is done).
    pub(crate) fn spawn(
        name: &str,
        signal: Arc<Signal>,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<Worker> {
        let thread = std::thread::Builder::new().name(name.into()).spawn(body)?;
        Ok(Worker {
            signal,
            thread: Some(thread),
        })
    }

    /// Stops the thread after its current step and waits for it.
    pub(crate) fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.signal.stop();
        if let Some(t) = self.thread.take() {
            let name = t.thread().name().unwrap_or("background").to_owned();
            if t.join().is_err() {
                tracing::error!(thread = %name, "background thread panicked");
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shutdown();
    }
}
