//! Live controls of a running copy: the pause gate, the number of workers and the rate limits.
//!
//! In: commands from the operator (command line, later the API), at any time. Out: watch channels
//! the workers and the engine's coordinator follow — a paused worker finishes its batch and takes
//! no other; a worker whose slot is above the wanted count retires after its batch; the
//! coordinator starts workers when the count grows; every worker waits for the [`Throttle`] before
//! it writes. Pausing is a gate of its own, not a rate of 0. The load guard's settings are
//! live controls too ([`LoadGuard`]): its gate is the throttle's first step.

pub mod adaptive;
pub mod guard;
pub mod throttle;

use std::sync::Arc;

use tokio::sync::watch;

use crate::bounds;
use crate::engine::control::guard::{GuardSettings, LoadGuard};
use crate::engine::control::throttle::{Limits, Throttle};

/// Workers unless a job says otherwise.
pub const DEFAULT_WORKERS: usize = 4;

#[derive(Debug)]
pub struct Control {
    paused: watch::Sender<bool>,
    workers: watch::Sender<usize>,
    throttle: Throttle,
    guard: Arc<LoadGuard>,
}

impl Control {
    /// Unlimited, running, with `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self::with_throttle(workers, Throttle::new(Limits::default()))
    }

    pub fn with_throttle(workers: usize, throttle: Throttle) -> Self {
        let guard = LoadGuard::new(GuardSettings::default(), throttle.hold.clone());
        Control {
            paused: watch::channel(false).0,
            workers: watch::channel(clamp_workers(workers)).0,
            throttle,
            guard: Arc::new(guard),
        }
    }

    /// The same controls, the load guard watching `settings`.
    pub fn with_guard(self, settings: GuardSettings) -> Self {
        self.guard.set_settings(settings);
        self
    }

    /// The load guard: its settings (changeable at any time), its gate and its decisions.
    pub fn guard(&self) -> &Arc<LoadGuard> {
        &self.guard
    }

    /// The job's rate limits (and the service's global ones), changeable at any time.
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
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

    /// Returns once the job is not paused (or `cancel` fires).
    pub async fn wait_while_paused(&self, cancel: &tokio_util::sync::CancellationToken) {
        let mut paused = self.paused.subscribe();
        tokio::select! {
            _ = paused.wait_for(|paused| !paused) => {}
            _ = cancel.cancelled() => {}
        }
    }

    /// Sets the number of workers (within [`bounds::WORKERS`]), effective after the batches in
    /// flight.
    pub fn set_workers(&self, n: usize) {
        self.workers.send_replace(clamp_workers(n));
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

fn clamp_workers(n: usize) -> usize {
    n.clamp(*bounds::WORKERS.range.start(), *bounds::WORKERS.range.end())
}
