//! What names a flight: a range of ledgers. A ticket is the JSON `{"start_ledger": A,
//! "end_ledger": B}` (`end_ledger` 0 or absent: follow the tip); the text `A-B` (or `A-`)
//! is accepted too, so a ticket can be typed by hand in any Flight client. A descriptor's
//! path is `["ledgers", "A-B"]`.

use serde::{Deserialize, Serialize};

/// A range of ledgers: `start..=end`, or from `start` on without `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerTicket {
    pub start_ledger: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub end_ledger: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The first element of a descriptor path naming a ledger range.
pub const PATH: &str = "ledgers";

impl LedgerTicket {
    pub fn new(start: u32, end: Option<u32>) -> Self {
        LedgerTicket {
            start_ledger: start,
            end_ledger: end.unwrap_or(0),
        }
    }

    /// The last ledger, when the range has one.
    pub fn end(&self) -> Option<u32> {
        (self.end_ledger != 0).then_some(self.end_ledger)
    }

    pub fn to_bytes(&self) -> bytes::Bytes {
        serde_json::to_vec(self)
            .expect("a ticket always serialises")
            .into()
    }

    /// A ticket's bytes, JSON or `A-B`; the message says what a ticket looks like.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| format!("ticket {bytes:?} is not text: {}", Self::SHAPE))?;
        let t = text.trim();
        let ticket = if t.starts_with('{') {
            serde_json::from_str::<LedgerTicket>(t)
                .map_err(|e| format!("ticket {t:?}: {e}; {}", Self::SHAPE))?
        } else {
            Self::parse_range(t)?
        };
        ticket.check()
    }

    /// `A-B` or `A-`.
    pub fn parse_range(t: &str) -> Result<Self, String> {
        let bad = || format!("ledger range {t:?}: {}", Self::SHAPE);
        let (a, b) = t.split_once('-').ok_or_else(bad)?;
        let start = a.trim().parse::<u32>().map_err(|_| bad())?;
        let end = match b.trim() {
            "" => 0,
            b => b.parse::<u32>().map_err(|_| bad())?,
        };
        LedgerTicket {
            start_ledger: start,
            end_ledger: end,
        }
        .check()
    }

    fn check(self) -> Result<Self, String> {
        if self.start_ledger == 0 {
            return Err(format!(
                "ticket: start_ledger must be 1 or more; {}",
                Self::SHAPE
            ));
        }
        if self.end_ledger != 0 && self.end_ledger < self.start_ledger {
            return Err(format!(
                "ticket: end_ledger {} is before start_ledger {}",
                self.end_ledger, self.start_ledger
            ));
        }
        Ok(self)
    }

    const SHAPE: &'static str =
        "a ticket is {\"start_ledger\": A, \"end_ledger\": B} or the text \"A-B\" (\"A-\" follows the tip)";

    /// The descriptor path of this range.
    pub fn path(&self) -> Vec<String> {
        vec![PATH.to_string(), self.to_string()]
    }
}

impl std::fmt::Display for LedgerTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.end() {
            Some(end) => write!(f, "{}-{end}", self.start_ledger),
            None => write!(f, "{}-", self.start_ledger),
        }
    }
}

/// The ledger a batch of a flight goes up to, carried in each batch's `app_metadata` (its
/// rows need not reach it: ledgers without events have none).
pub fn through_metadata(ledger: u32) -> bytes::Bytes {
    format!("{{\"through_ledger\":{ledger}}}")
        .into_bytes()
        .into()
}

/// The ledger of [`through_metadata`]; `None` for metadata of another shape.
pub fn parse_through(metadata: &[u8]) -> Option<u32> {
    #[derive(Deserialize)]
    struct Through {
        through_ledger: u32,
    }
    serde_json::from_slice::<Through>(metadata)
        .ok()
        .map(|t| t.through_ledger)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_text_tickets_name_the_same_range() {
        let json = LedgerTicket::new(997, Some(999)).to_bytes();
        assert_eq!(&json[..], br#"{"start_ledger":997,"end_ledger":999}"#);
        assert_eq!(LedgerTicket::parse(&json), LedgerTicket::parse(b"997-999"));
        let live = LedgerTicket::parse(br#"{"start_ledger": 5}"#).unwrap();
        assert_eq!(live.end(), None);
        assert_eq!(LedgerTicket::parse(b"5-").unwrap(), live);
        assert_eq!(live.path(), ["ledgers", "5-"]);
    }

    #[test]
    fn bad_tickets_say_what_a_ticket_looks_like() {
        for (bad, says) in [
            (&b"9-3"[..], "end_ledger 3 is before start_ledger 9"),
            (b"0-3", "start_ledger must be 1 or more"),
            (b"yesterday", "a ticket is"),
            (b"{\"start\": 1}", "a ticket is"),
            (&[0xff, 0xfe], "is not text"),
        ] {
            let err = LedgerTicket::parse(bad).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn through_metadata_reads_back() {
        assert_eq!(parse_through(&through_metadata(42)), Some(42));
        assert_eq!(parse_through(b"{}"), None);
    }
}
