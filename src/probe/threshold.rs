//! Consecutive-answer thresholds, as Kubernetes probes count them.

/// Counts consecutive successes and failures and says when the verdict changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threshold {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    /// `None` until the first verdict.
    passing: Option<bool>,
}

impl Threshold {
    pub fn new(success_threshold: u32, failure_threshold: u32) -> Self {
        Threshold {
            success_threshold: success_threshold.max(1),
            failure_threshold: failure_threshold.max(1),
            successes: 0,
            failures: 0,
            passing: None,
        }
    }

    /// Records one answer; returns `Some(passing)` when the verdict changes.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= self.success_threshold && self.passing != Some(true) {
                self.passing = Some(true);
                return Some(true);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= self.failure_threshold && self.passing != Some(false) {
                self.passing = Some(false);
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_changes_only_at_thresholds() {
        let mut t = Threshold::new(2, 3);
        let answers = [
            true, true, true, false, false, true, false, false, false, false,
        ];
        let got: Vec<Option<bool>> = answers.iter().map(|ok| t.record(*ok)).collect();
        let want = [
            None,
            Some(true),
            None,
            None,
            None,
            None,
            None,
            None,
            Some(false),
            None,
        ];
        assert_eq!(got, want);
    }
}
