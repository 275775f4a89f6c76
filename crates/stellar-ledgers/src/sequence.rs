//! Ledger sequence continuity: every reader and source hands ledgers on in order with no
//! gap, so a lake object or a server answer holding the wrong ledger is caught where it is
//! read, naming the ledger expected and the one found.

use std::fmt;

/// Tracks the next ledger a stream must deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Continuity {
    next: u32,
}

/// What to do with a ledger that came in order or before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The expected ledger: hand it on.
    Deliver,
    /// A ledger already delivered (or before the start): drop it.
    Repeat,
}

/// A ledger past the expected one: the ledgers between are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct Gap {
    pub expected: u32,
    pub found: u32,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected ledger {}, found {}", self.expected, self.found)
    }
}

impl Continuity {
    /// A stream whose first ledger is `start`.
    pub fn starting_at(start: u32) -> Self {
        Self { next: start }
    }

    /// The ledger the stream must deliver next.
    pub fn expected(&self) -> u32 {
        self.next
    }

    /// Checks the ledger `found`; a delivered one moves the expectation past it.
    pub fn check(&mut self, found: u32) -> Result<Step, Gap> {
        if found < self.next {
            return Ok(Step::Repeat);
        }
        if found > self.next {
            return Err(Gap {
                expected: self.next,
                found,
            });
        }
        self.next = found.saturating_add(1);
        Ok(Step::Deliver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_ledger_is_a_gap_naming_expected_and_found() {
        let mut c = Continuity::starting_at(997);
        assert_eq!(c.check(997), Ok(Step::Deliver));
        assert_eq!(c.check(997), Ok(Step::Repeat));
        let gap = c.check(999).unwrap_err();
        assert_eq!(gap.to_string(), "expected ledger 998, found 999");
        assert_eq!(c.expected(), 998);
    }
}
