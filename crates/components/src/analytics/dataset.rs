//! A Parquet dataset of token-transfer events, Hive-partitioned by close date and written
//! exactly once across restarts and kills.
//!
//! `OUTPUT_DIR/date=YYYY-MM-DD/part-FIRST-LAST.parquet` (ledgers zero-padded to ten digits),
//! zstd-compressed, row groups of [`ROW_GROUP_ROWS`]. A file is written under a dot-name
//! (`.part-….parquet.tmp`, which readers' `**/*.parquet` globs skip), fsynced and renamed:
//! no reader ever sees half a file. Once every file of a flush is in place,
//! `_checkpoint.json` records the last ledger complete. On open, temp files are removed, and
//! so are part files starting after the checkpoint (a flush killed before its checkpoint):
//! their ledgers are written again, once.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::arrow::events;
use crate::sink::SinkError;

/// Rows in a row group: a few MiB of events, as scanners like them.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

pub const CHECKPOINT: &str = "_checkpoint.json";

/// Rows buffered that make a flush by default: two row groups, about 100 MiB of memory at
/// its peak while a file is encoded.
pub const DEFAULT_FLUSH_ROWS: usize = 256 * 1024;

/// When buffered events are written out.
#[derive(Debug, Clone, Copy)]
pub struct FlushPolicy {
    /// Rows buffered that make a flush.
    pub rows: usize,
    /// Longest time complete ledgers wait in memory, so a live stream's files appear.
    pub interval: Duration,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy {
            rows: DEFAULT_FLUSH_ROWS,
            interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    /// Every ledger up to this one is in the dataset; `None`: no ledger yet.
    through_ledger: Option<u32>,
}

/// What one flush wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub files: u64,
    pub bytes: u64,
    pub rows: u64,
}

pub struct ParquetDataset {
    root: PathBuf,
    policy: FlushPolicy,
    /// The checkpoint stored.
    committed: Option<u32>,
    buffered: Vec<RecordBatch>,
    rows: usize,
    /// The last ledger the buffered batches cover.
    through: Option<u32>,
    since: Instant,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `part-FIRST-LAST.parquet` → its first ledger; `None` for any other name.
fn part_first_ledger(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (first, last) = rest.split_once('-')?;
    let ok = |s: &str| s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit());
    (ok(first) && ok(last)).then(|| first.parse().ok())?
}

fn is_temp(name: &str) -> bool {
    name.starts_with(".part-") && name.ends_with(".parquet.tmp")
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The partition directory of a close time in microseconds.
fn date_of(micros: i64) -> Result<String, SinkError> {
    arrow_array::temporal_conversions::timestamp_us_to_datetime(micros)
        .map(|t| format!("date={}", t.date().format("%Y-%m-%d")))
        .ok_or_else(|| SinkError::Checkpoint {
            path: "closed_at".into(),
            message: format!("close time {micros} µs is out of range"),
        })
}

impl ParquetDataset {
    /// Opens (or creates) the dataset at `root`, cleaning up after a killed run.
    pub fn open(root: &Path, policy: FlushPolicy) -> Result<ParquetDataset, SinkError> {
        std::fs::create_dir_all(root).map_err(io(root))?;
        let checkpoint_path = root.join(CHECKPOINT);
        let committed = match std::fs::read(&checkpoint_path) {
            Ok(bytes) => {
                let c: Checkpoint =
                    serde_json::from_slice(&bytes).map_err(|e| SinkError::Checkpoint {
                        path: checkpoint_path.display().to_string(),
                        message: format!("not a dataset checkpoint ({e}); it should be {{\"through_ledger\": N}}"),
                    })?;
                Some(c.through_ledger)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&checkpoint_path)(e)),
        };
        let mut parts = Vec::new();
        for entry in std::fs::read_dir(root).map_err(io(root))? {
            let entry = entry.map_err(io(root))?;
            let dir = entry.path();
            let is_partition = entry.file_name().to_string_lossy().starts_with("date=");
            if !is_partition || !dir.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&dir).map_err(io(&dir))? {
                let f = f.map_err(io(&dir))?;
                let name = f.file_name().to_string_lossy().into_owned();
                if is_temp(&name) {
                    std::fs::remove_file(f.path()).map_err(io(&f.path()))?;
                } else if let Some(first) = part_first_ledger(&name) {
                    parts.push((first, f.path()));
                }
            }
        }
        let committed = match committed {
            Some(c) => c,
            // A dataset this sink never checkpointed must not hold its files: they would be
            // written again next to themselves.
            None if !parts.is_empty() => {
                return Err(SinkError::Checkpoint {
                    path: checkpoint_path.display().to_string(),
                    message: format!(
                        "is missing but {} holds {} part file(s) (such as {}): restore the \
                         checkpoint or move the files away",
                        root.display(),
                        parts.len(),
                        parts[0].1.display()
                    ),
                });
            }
            None => {
                // Stored before any file, so a file is never without a checkpoint.
                store_checkpoint(root, None)?;
                None
            }
        };
        for (first, path) in parts {
            if committed.is_none_or(|c| first > c) {
                tracing::info!(file = %path.display(), "removing a part file a killed flush left past the checkpoint");
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        Ok(ParquetDataset {
            root: root.to_path_buf(),
            policy,
            committed,
            buffered: Vec::new(),
            rows: 0,
            through: None,
            since: Instant::now(),
        })
    }

    /// The first ledger not in the dataset, when it holds any.
    pub fn resume_from(&self) -> Option<u32> {
        self.committed.map(|c| c.saturating_add(1))
    }

    /// Takes a batch of whole ledgers, every ledger up to `through`; flushes when enough rows
    /// are buffered.
    pub fn write(&mut self, batch: &RecordBatch, through: u32) -> Result<Flushed, SinkError> {
        if batch.num_rows() > 0 {
            self.rows += batch.num_rows();
            self.buffered.push(batch.clone());
        }
        self.through = Some(through);
        if self.rows >= self.policy.rows {
            return self.flush();
        }
        Ok(Flushed::default())
    }

    /// Whether buffered ledgers have waited [`FlushPolicy::interval`].
    pub fn due(&self) -> bool {
        self.through.is_some() && self.since.elapsed() >= self.policy.interval
    }

    /// Writes every buffered ledger and checkpoints them.
    pub fn flush(&mut self) -> Result<Flushed, SinkError> {
        let Some(through) = self.through else {
            return Ok(Flushed::default());
        };
        let mut flushed = Flushed::default();
        for (partition, batches) in self.by_partition()? {
            flushed.rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            flushed.bytes += self.write_file(&partition, &batches)?;
            flushed.files += 1;
        }
        store_checkpoint(&self.root, Some(through))?;
        self.committed = Some(through);
        self.buffered.clear();
        self.rows = 0;
        self.through = None;
        self.since = Instant::now();
        Ok(flushed)
    }

    /// The buffered rows cut into runs of one close date (ledgers are in order, so a date's
    /// rows are together).
    fn by_partition(&self) -> Result<Vec<(String, Vec<RecordBatch>)>, SinkError> {
        let mut runs: Vec<(i64, Vec<RecordBatch>)> = Vec::new();
        for batch in &self.buffered {
            let times = events::close_times(batch).map_err(bad_batch)?;
            // Days since the epoch: a comparison per row, a date's name once per run.
            let day = |row: usize| times.value(row).div_euclid(MICROS_PER_DAY);
            let mut start = 0;
            while start < batch.num_rows() {
                let today = day(start);
                let mut end = start + 1;
                while end < batch.num_rows() && day(end) == today {
                    end += 1;
                }
                let slice = batch.slice(start, end - start);
                match runs.last_mut() {
                    Some((d, batches)) if *d == today => batches.push(slice),
                    _ => runs.push((today, vec![slice])),
                }
                start = end;
            }
        }
        runs.into_iter()
            .map(|(day, batches)| Ok((date_of(day * MICROS_PER_DAY)?, batches)))
            .collect()
    }

    /// One part file of `batches`, in place whole; its size.
    fn write_file(&self, partition: &str, batches: &[RecordBatch]) -> Result<u64, SinkError> {
        let ledger = |b: &RecordBatch, row: usize| -> Result<u32, SinkError> {
            Ok(events::ledgers(b).map_err(bad_batch)?.value(row))
        };
        let first = ledger(&batches[0], 0)?;
        let last_batch = &batches[batches.len() - 1];
        let last = ledger(last_batch, last_batch.num_rows() - 1)?;
        let dir = self.root.join(partition);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let name = format!("part-{first:010}-{last:010}.parquet");
        let path = dir.join(&name);
        let temp = dir.join(format!(".{name}.tmp"));
        let file = File::create(&temp).map_err(io(&temp))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("level 3 exists"),
            ))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let parquet_error = |e: parquet::errors::ParquetError| SinkError::Io {
            path: temp.display().to_string(),
            source: std::io::Error::other(e),
        };
        let mut writer =
            ArrowWriter::try_new(file, events::schema(), Some(props)).map_err(parquet_error)?;
        for b in batches {
            writer.write(b).map_err(parquet_error)?;
        }
        let file = writer.into_inner().map_err(parquet_error)?;
        file.sync_all().map_err(io(&temp))?;
        let bytes = file.metadata().map_err(io(&temp))?.len();
        drop(file);
        std::fs::rename(&temp, &path).map_err(io(&path))?;
        sync_dir(&dir)?;
        Ok(bytes)
    }
}

fn bad_batch(e: events::EventBatchError) -> SinkError {
    SinkError::Upstream {
        addr: "the processor's flight".into(),
        message: e.to_string(),
    }
}

fn store_checkpoint(root: &Path, through: Option<u32>) -> Result<(), SinkError> {
    let path = root.join(CHECKPOINT);
    let temp = root.join(format!(".{CHECKPOINT}.tmp"));
    let text = serde_json::to_vec(&Checkpoint {
        through_ledger: through,
    })
    .expect("a checkpoint serialises");
    let mut f = File::create(&temp).map_err(io(&temp))?;
    std::io::Write::write_all(&mut f, &text).map_err(io(&temp))?;
    f.sync_all().map_err(io(&temp))?;
    std::fs::rename(&temp, &path).map_err(io(&path))?;
    sync_dir(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_carry_their_ledgers_and_nothing_else_is_taken_for_one() {
        assert_eq!(
            part_first_ledger("part-0000000997-0000000999.parquet"),
            Some(997)
        );
        for other in [
            "part-997-999.parquet",
            "data.parquet",
            "part-0000000997-0000000999.parquet.tmp",
            "part-000000099x-0000000999.parquet",
        ] {
            assert_eq!(part_first_ledger(other), None, "{other}");
        }
        assert!(is_temp(".part-0000000997-0000000999.parquet.tmp"));
    }

    #[test]
    fn close_times_name_their_utc_date() {
        assert_eq!(date_of(1_707_246_039_000_000).unwrap(), "date=2024-02-06");
        assert_eq!(date_of(0).unwrap(), "date=1970-01-01");
    }
}
