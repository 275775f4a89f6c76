//! A component's stop signal: SIGTERM or SIGINT. Every long-lived task holds a clone and
//! winds down when it fires (streams end, complete work is written); [`GRACE`] bounds how
//! long that may take, so a component never waits for its supervisor's SIGKILL.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// How long a component may finish its work after the stop signal: streams to slow
/// consumers and writes to a database that does not answer are given up after it.
pub const GRACE: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Fires on the first SIGTERM or SIGINT from now on. Call it first thing, so that a
    /// signal during start-up also ends the process cleanly.
    pub fn on_signals() -> std::io::Result<Shutdown> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "stopping");
            trigger.fire();
        });
        Ok(shutdown)
    }

    /// A stop signal fired by hand (in-process use, tests).
    pub fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger(tx), Shutdown(rx))
    }

    /// A stop signal that never fires.
    pub fn never() -> Shutdown {
        Shutdown::new().1
    }

    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once the stop was asked for.
    pub async fn requested(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|stop| *stop).await.is_err() {
            // The trigger is gone unfired: no stop will come. (A fired stop stays visible
            // after its trigger is dropped.)
            std::future::pending::<()>().await;
        }
    }

    /// Completes [`GRACE`] after the stop was asked for.
    pub async fn grace_over(&self) {
        self.requested().await;
        tokio::time::sleep(GRACE).await;
    }
}

pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}
