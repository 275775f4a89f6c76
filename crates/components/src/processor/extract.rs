//! Offline extraction: ledger files or a data lake in, JSONL events out.

use std::io::Write;
use std::path::{Path, PathBuf};

use stellar_ledgers::LedgerRange;
use stellar_ttp::EventsProcessor;

/// Why extraction stopped; the message names the input and, where known, the ledger.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{0}")]
    Read(#[from] stellar_ledgers::ReadError),
    #[error("{}: {source}", path.display())]
    Process {
        path: PathBuf,
        ledger: u32,
        source: stellar_ttp::TtpError,
    },
    #[error("cannot write events: {0}")]
    Write(#[from] std::io::Error),
}

/// Totals of one extraction run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub ledgers: u64,
    pub events: u64,
}

/// Writes the events of every ledger of every input, in input order, one JSON object a line.
pub fn extract(
    passphrase: &str,
    inputs: &[PathBuf],
    range: LedgerRange,
    out: &mut impl Write,
) -> Result<Summary, ExtractError> {
    let processor = EventsProcessor::new(passphrase);
    let mut summary = Summary::default();
    let mut line = String::with_capacity(1024);
    for path in inputs {
        for lcm in stellar_ledgers::open(path, range)? {
            let lcm = lcm?;
            let events = processor
                .events_from_ledger(&lcm)
                .map_err(|source| process_error(path, &lcm, source))?;
            for e in &events {
                line.clear();
                stellar_ttp::write_json(&mut line, e);
                line.push('\n');
                out.write_all(line.as_bytes())?;
            }
            summary.ledgers += 1;
            summary.events += events.len() as u64;
        }
    }
    out.flush()?;
    Ok(summary)
}

fn process_error(
    path: &Path,
    lcm: &stellar_xdr::LedgerCloseMeta,
    source: stellar_ttp::TtpError,
) -> ExtractError {
    ExtractError::Process {
        path: path.to_path_buf(),
        ledger: stellar_ttp::ledger_sequence(lcm),
        source,
    }
}
