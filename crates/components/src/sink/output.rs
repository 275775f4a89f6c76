//! Console and JSON-lines outputs on stdout. Neither keeps a checkpoint: they start where
//! told.

use std::io::Write;

use super::fields::flat;
use super::{LedgerEvents, SinkError};

pub enum Output {
    /// One readable line per event on stdout.
    Console,
    /// One JSON object per line on stdout (a file is a [`JsonlFile`](super::jsonl_file::JsonlFile)).
    Jsonl {
        out: std::io::BufWriter<std::io::Stdout>,
        /// A batch's lines are written here first, then to `out` in one go; kept between
        /// batches so its allocation is reused.
        text: String,
    },
}

/// Appends one JSON line per event of `batch` to `text`.
pub fn jsonl_lines(text: &mut String, batch: &[LedgerEvents]) {
    for l in batch {
        for ev in &l.events {
            stellar_ttp::write_json(text, ev);
            text.push('\n');
        }
    }
}

impl Output {
    pub fn jsonl_stdout() -> Output {
        Output::Jsonl {
            out: std::io::BufWriter::new(std::io::stdout()),
            text: String::new(),
        }
    }

    pub fn write(&mut self, batch: &[LedgerEvents]) -> Result<(), SinkError> {
        let io = |source| SinkError::Io {
            path: "stdout".into(),
            source,
        };
        match self {
            Output::Console => {
                let stdout = std::io::stdout();
                let mut lock = stdout.lock();
                for l in batch {
                    for ev in &l.events {
                        let line = console_line(l.ledger, ev);
                        writeln!(lock, "{line}").map_err(io)?;
                    }
                }
                lock.flush().map_err(io)
            }
            Output::Jsonl { out, text } => {
                text.clear();
                jsonl_lines(text, batch);
                out.write_all(text.as_bytes()).map_err(io)?;
                out.flush().map_err(io)
            }
        }
    }
}

fn console_line(ledger: u32, ev: &flowctl_proto::token_transfer::TokenTransferEvent) -> String {
    let Some(f) = flat(ev) else {
        return format!("ledger {ledger}: event without a body");
    };
    let meta = ev.meta.as_ref();
    let tx = meta.map(|m| m.transaction_index).unwrap_or_default();
    let op = meta
        .and_then(|m| m.operation_index)
        .map(|o| format!(" op {o}"))
        .unwrap_or_default();
    let asset = f.asset.unwrap_or_else(|| "token".into());
    let parties = match (f.from, f.to) {
        (Some(a), Some(b)) => format!("{a} -> {b}"),
        (Some(a), None) => format!("{a} ->"),
        (None, Some(b)) => format!("-> {b}"),
        (None, None) => String::new(),
    };
    format!(
        "ledger {ledger} tx {tx}{op} {:<8} {} {asset} {parties}",
        f.kind, f.amount
    )
}
