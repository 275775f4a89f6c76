//! Waits between reconnection attempts: doubling up to a cap, each drawn at random from its
//! upper half ("equal jitter"), so readers that lost one upstream together do not come back
//! in step, and a stream that keeps breaking is asked for less and less often.
//!
//! Only progress resets it: a reader whose upstream ends every stream early (the Go
//! ttp-processor answering `Unavailable` before the end of a bounded request) backs off to the
//! cap instead of reconnecting several times a second for ever.

use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The wait before the next attempt; each call doubles the following one up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(rand::random::<f64>())
    }

    /// [`Backoff::next_delay`] with the random draw, in `[0, 1)`, given.
    pub fn next_delay_with(&mut self, sample: f64) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        base.mul_f64(0.5 + 0.5 * sample.clamp(0.0, 1.0))
    }

    /// Progress was made: the next wait is the shortest again.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_until_cap_with_jitter_in_the_upper_half_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let top: Vec<_> = (0..5).map(|_| b.next_delay_with(1.0).as_millis()).collect();
        assert_eq!(top, [100, 200, 400, 500, 500]);
        b.reset();
        let bottom: Vec<_> = (0..5).map(|_| b.next_delay_with(0.0).as_millis()).collect();
        assert_eq!(bottom, [50, 100, 200, 250, 250]);
        b.reset();
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(500));
        }
    }
}
