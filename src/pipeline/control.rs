//! Live controls of a running copy: the pause gate and the number of workers.
//!
//! In: commands from the operator (command line, later the API), at any time. Out: watch channels
//! the workers and the engine's coordinator follow — a paused worker finishes its batch and takes
//! no other; a worker whose slot is above the wanted count retires after its batch; the
//! coordinator starts workers when the count grows. Pausing is a gate of its own, not a rate of 0.

use tokio::sync::watch;

use crate::config::MAX_WORKERS;

#[derive(Debug)]
pub struct Control {
    paused: watch::Sender<bool>,
    workers: watch::Sender<usize>,
}

impl Control {
    pub fn new(workers: usize) -> Self {
        Control {
            paused: watch::channel(false).0,
            workers: watch::channel(workers.clamp(1, MAX_WORKERS)).0,
        }
    }

    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Sets the number of workers (1..=MAX_WORKERS), effective after the batches in flight.
    pub fn set_workers(&self, n: usize) {
        self.workers.send_replace(n.clamp(1, MAX_WORKERS));
    }

    pub fn workers(&self) -> usize {
        *self.workers.borrow()
    }

    pub(crate) fn watch_paused(&self) -> watch::Receiver<bool> {
        self.paused.subscribe()
    }

    pub(crate) fn watch_workers(&self) -> watch::Receiver<usize> {
        self.workers.subscribe()
    }
}
