//! The outputs of `arrow-analytics-sink`: batches of token-transfer events (whole ledgers,
//! in ledger order) written as a Parquet dataset, JSON lines, and a live WebSocket feed.

pub mod dataset;
pub mod feed;
pub mod metrics;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow_array::RecordBatch;

use crate::arrow::events;
use crate::sink::jsonl_file::JsonlFile;
use crate::sink::{LedgerEvents, SinkError};
use dataset::{FlushPolicy, ParquetDataset};
use feed::Feed;
use metrics::AnalyticsMetrics;

/// `OUTPUT_FORMATS`: which outputs are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputFormats {
    pub parquet: bool,
    pub json: bool,
    pub websocket: bool,
}

pub const FORMATS: &[&str] = &["parquet", "json", "websocket"];

impl OutputFormats {
    /// A comma-separated list of `parquet`, `json`, `websocket`.
    pub fn parse(text: &str) -> Result<OutputFormats, String> {
        let mut f = OutputFormats::default();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word.to_ascii_lowercase().as_str() {
                "parquet" => f.parquet = true,
                "json" | "jsonl" => f.json = true,
                "websocket" | "ws" => f.websocket = true,
                other => {
                    return Err(format!(
                        "OUTPUT_FORMATS: {other:?} is not an output (known: {})",
                        FORMATS.join(", ")
                    ))
                }
            }
        }
        if f == OutputFormats::default() {
            return Err(format!(
                "OUTPUT_FORMATS is empty: name at least one of {}",
                FORMATS.join(", ")
            ));
        }
        Ok(f)
    }

    /// The list as the seed's `output_formats` metadata writes it.
    pub fn describe(&self) -> String {
        let on = [self.parquet, self.json, self.websocket];
        FORMATS
            .iter()
            .zip(on)
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Where the outputs go.
pub struct OutputsConfig {
    pub formats: OutputFormats,
    pub dir: PathBuf,
    /// The JSON lines file (default `DIR/events.jsonl`).
    pub json_file: Option<PathBuf>,
    pub flush: FlushPolicy,
}

/// Every configured output, each batch given to all of them.
pub struct Outputs {
    parquet: Option<ParquetDataset>,
    json: Option<JsonlFile>,
    feed: Option<Feed>,
    metrics: Arc<AnalyticsMetrics>,
}

impl Outputs {
    /// Opens the durable outputs (the feed is attached with [`Outputs::with_feed`]).
    pub fn open(config: &OutputsConfig, metrics: Arc<AnalyticsMetrics>) -> Result<Self, SinkError> {
        let parquet = config
            .formats
            .parquet
            .then(|| ParquetDataset::open(&config.dir, config.flush))
            .transpose()?;
        let json = if config.formats.json {
            let path = config
                .json_file
                .clone()
                .unwrap_or_else(|| config.dir.join("events.jsonl"));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| SinkError::Io {
                    path: parent.display().to_string(),
                    source,
                })?;
            }
            Some(JsonlFile::open(&path)?)
        } else {
            None
        };
        Ok(Outputs {
            parquet,
            json,
            feed: None,
            metrics,
        })
    }

    pub fn with_feed(mut self, feed: Feed) -> Self {
        self.feed = Some(feed);
        self
    }

    /// The first ledger not written by every durable output; `None` when none keeps a
    /// checkpoint yet (a feed alone keeps none).
    pub fn resume_from(&self) -> Option<u32> {
        let parquet = self.parquet.as_ref().map(|p| p.resume_from());
        let json = self
            .json
            .as_ref()
            .map(|j| (j.checkpoint() != 0).then(|| j.checkpoint() + 1));
        // The output furthest behind decides; one without a checkpoint means from the start.
        match (parquet, json) {
            (Some(a), Some(b)) => a.zip(b).map(|(a, b)| a.min(b)),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => None,
        }
    }

    /// Writes a batch of whole ledgers, every ledger up to `through`.
    pub fn write(&mut self, batch: &RecordBatch, through: u32) -> Result<(), SinkError> {
        let m = &self.metrics;
        let rows = batch.num_rows() as u64;
        m.events_received.fetch_add(rows, Ordering::Relaxed);
        if let Some(p) = &mut self.parquet {
            let f = p.write(batch, through)?;
            self.count(f);
        }
        if self.json.is_some() || self.feed.is_some() {
            let evs = events::from_batch(batch).map_err(|e| SinkError::Upstream {
                addr: "the processor's flight".into(),
                message: e.to_string(),
            })?;
            if let Some(feed) = &self.feed {
                let mut line = String::with_capacity(512);
                for e in &evs {
                    line.clear();
                    stellar_ttp::write_json(&mut line, e);
                    feed.send(&line);
                }
            }
            if let Some(j) = &mut self.json {
                j.write(&by_ledger(evs), through)?;
            }
        }
        self.metrics
            .events_written
            .fetch_add(rows, Ordering::Relaxed);
        self.metrics
            .last_ledger
            .fetch_max(u64::from(through), Ordering::Relaxed);
        Ok(())
    }

    /// Writes out what waited its flush interval (called while no batch arrives too).
    pub fn flush_if_due(&mut self) -> Result<(), SinkError> {
        if let Some(p) = &mut self.parquet {
            if p.due() {
                let f = p.flush()?;
                self.count(f);
            }
        }
        if let Some(j) = &mut self.json {
            j.sync_if_due()?;
        }
        Ok(())
    }

    /// Writes out and checkpoints everything: at the end of a range and on a stop.
    pub fn finish(&mut self) -> Result<(), SinkError> {
        if let Some(p) = &mut self.parquet {
            let f = p.flush()?;
            self.count(f);
        }
        if let Some(j) = &mut self.json {
            j.sync()?;
        }
        Ok(())
    }

    fn count(&self, f: dataset::Flushed) {
        self.metrics
            .files_written
            .fetch_add(f.files, Ordering::Relaxed);
        self.metrics
            .bytes_written
            .fetch_add(f.bytes, Ordering::Relaxed);
    }
}

/// Events grouped by ledger, in order, as the JSON lines file takes them.
fn by_ledger(evs: Vec<flowctl_proto::token_transfer::TokenTransferEvent>) -> Vec<LedgerEvents> {
    let mut out: BTreeMap<u32, Vec<_>> = BTreeMap::new();
    for e in evs {
        let l = e.meta.as_ref().map_or(0, |m| m.ledger_sequence);
        out.entry(l).or_default().push(e);
    }
    out.into_iter()
        .map(|(ledger, events)| LedgerEvents { ledger, events })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_formats_name_the_outputs_and_refuse_unknown_or_none() {
        let f = OutputFormats::parse("parquet, JSON,websocket").unwrap();
        assert_eq!(f.describe(), "parquet,json,websocket");
        assert_eq!(
            OutputFormats::parse("parquet,csv").unwrap_err(),
            "OUTPUT_FORMATS: \"csv\" is not an output (known: parquet, json, websocket)"
        );
        assert!(OutputFormats::parse(" , ")
            .unwrap_err()
            .contains("is empty"));
    }
}
