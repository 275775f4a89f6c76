//! Offline extraction: ledger files or a data lake in, JSON lines out — token-transfer
//! events here, and any other processor's records through [`extract_lines`].

use std::io::Write;
use std::path::PathBuf;

use stellar_ledgers::LedgerRange;
use stellar_ttp::EventsProcessor;
use stellar_xdr::LedgerCloseMeta;

/// Why extraction stopped; the message names the input and, where known, the ledger.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{0}")]
    Read(#[from] stellar_ledgers::ReadError),
    #[error("{}: {message}", path.display())]
    Process {
        path: PathBuf,
        ledger: u32,
        message: String,
    },
    #[error("cannot write records: {0}")]
    Write(#[from] std::io::Error),
}

/// Totals of one extraction run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub ledgers: u64,
    /// Records written (events, changes).
    pub events: u64,
}

/// Writes the records `lines` makes of every ledger of every input, in input order.
/// `lines` appends one JSON line per record to the buffer and returns how many it wrote.
pub fn extract_lines(
    inputs: &[PathBuf],
    range: LedgerRange,
    out: &mut impl Write,
    mut lines: impl FnMut(&LedgerCloseMeta, &mut String) -> Result<usize, String>,
) -> Result<Summary, ExtractError> {
    let mut summary = Summary::default();
    let mut text = String::with_capacity(1 << 16);
    for path in inputs {
        for lcm in stellar_ledgers::open(path, range)? {
            let lcm = lcm?;
            text.clear();
            let n = lines(&lcm, &mut text).map_err(|message| ExtractError::Process {
                path: path.to_path_buf(),
                ledger: stellar_ttp::ledger_sequence(&lcm),
                message,
            })?;
            out.write_all(text.as_bytes())?;
            summary.ledgers += 1;
            summary.events += n as u64;
        }
    }
    out.flush()?;
    Ok(summary)
}

/// Writes the token-transfer events of every ledger of every input, one JSON object a line.
pub fn extract(
    passphrase: &str,
    inputs: &[PathBuf],
    range: LedgerRange,
    out: &mut impl Write,
) -> Result<Summary, ExtractError> {
    let processor = EventsProcessor::new(passphrase);
    extract_lines(inputs, range, out, |lcm, text| {
        let events = processor
            .events_from_ledger(lcm)
            .map_err(|e| e.to_string())?;
        for e in &events {
            stellar_ttp::write_json(text, e);
            text.push('\n');
        }
        Ok(events.len())
    })
}
