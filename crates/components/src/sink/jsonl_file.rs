//! A JSON-lines output file written exactly once across restarts and kills. Its sidecar
//! [checkpoint](super::checkpoint) records the bytes that are complete and the last ledger
//! they hold; the checkpoint is only moved after the output is fsynced, and only to a ledger
//! boundary. On open, a tail written after the checkpoint (a kill mid-batch) is cut off and
//! the sink resumes from the ledger after the checkpointed one.
//!
//! The file is only appended to, in ledger order: a bounded run whose `START_LEDGER` is at
//! or before the checkpoint takes the ledgers up to it as written and appends the rest, and
//! one whose `END_LEDGER` is at or before it writes nothing and logs a warning saying so
//! (a replay of older ledgers goes to another `OUTPUT_FILE`). No line is ever written twice.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::checkpoint::{self, Checkpoint};
use super::output::jsonl_lines;
use super::{LedgerEvents, SinkError};

/// Longest time complete ledgers stay written but not checkpointed. Each checkpoint costs two
/// fsyncs; a kill in between only means those ledgers are written again after the restart.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

pub struct JsonlFile {
    path: PathBuf,
    checkpoint_path: PathBuf,
    file: File,
    /// Bytes of the output written so far.
    offset: u64,
    /// The last checkpoint stored.
    stored: Checkpoint,
    /// The last ledger written (maybe not checkpointed yet).
    through: u32,
    stored_at: Instant,
    text: String,
}

impl JsonlFile {
    /// Opens (or creates) `path`, cutting off what a killed run wrote after its checkpoint.
    /// Without a checkpoint the file's current content is kept and appended to.
    pub fn open(path: &Path) -> Result<JsonlFile, SinkError> {
        let io = |source| SinkError::Io {
            path: path.display().to_string(),
            source,
        };
        let checkpoint_path = checkpoint::path_for(path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let stored = match checkpoint::load(&checkpoint_path)? {
            Some(c) if c.offset > len => {
                return Err(SinkError::Checkpoint {
                    path: checkpoint_path.display().to_string(),
                    message: format!(
                        "records {} bytes of {} as written, but the file has {len}: it was \
                         truncated or replaced. Move both aside to start over",
                        c.offset,
                        path.display()
                    ),
                })
            }
            Some(c) => {
                if len > c.offset {
                    tracing::warn!(
                        output = %path.display(),
                        bytes = len - c.offset,
                        checkpoint = c.last_ledger,
                        "cutting off what was written after the last checkpoint"
                    );
                    file.set_len(c.offset).map_err(io)?;
                    file.sync_all().map_err(io)?;
                }
                c
            }
            None => {
                // Recorded before the first write, so that a kill before the first
                // checkpoint leaves a tail that can be told apart from the file's content.
                let c = Checkpoint {
                    last_ledger: 0,
                    offset: len,
                };
                checkpoint::store(&checkpoint_path, c)?;
                c
            }
        };
        file.seek(SeekFrom::Start(stored.offset)).map_err(io)?;
        Ok(JsonlFile {
            path: path.to_path_buf(),
            checkpoint_path,
            file,
            offset: stored.offset,
            stored,
            through: stored.last_ledger,
            stored_at: Instant::now(),
            text: String::new(),
        })
    }

    /// The last ledger the output holds for sure (0: none).
    pub fn checkpoint(&self) -> u32 {
        self.stored.last_ledger
    }

    /// Appends the events of complete ledgers, every ledger up to `through` included, and
    /// moves the checkpoint there when the last one is older than [`CHECKPOINT_INTERVAL`].
    pub fn write(&mut self, batch: &[LedgerEvents], through: u32) -> Result<(), SinkError> {
        self.text.clear();
        jsonl_lines(&mut self.text, batch);
        self.file
            .write_all(self.text.as_bytes())
            .map_err(|source| self.io(source))?;
        self.offset += self.text.len() as u64;
        self.through = through;
        self.sync_if_due()
    }

    /// Checkpoints what was written when the last checkpoint is older than
    /// [`CHECKPOINT_INTERVAL`]; also called while no ledger arrives, so that a quiet stream
    /// leaves nothing unsynced for long.
    pub fn sync_if_due(&mut self) -> Result<(), SinkError> {
        if self.stored_at.elapsed() >= CHECKPOINT_INTERVAL {
            self.sync()?;
        }
        Ok(())
    }

    /// Makes everything written durable and checkpoints it.
    pub fn sync(&mut self) -> Result<(), SinkError> {
        let now = Checkpoint {
            last_ledger: self.through,
            offset: self.offset,
        };
        if now == self.stored {
            return Ok(());
        }
        self.file.sync_data().map_err(|source| self.io(source))?;
        checkpoint::store(&self.checkpoint_path, now)?;
        self.stored = now;
        self.stored_at = Instant::now();
        Ok(())
    }

    fn io(&self, source: std::io::Error) -> SinkError {
        SinkError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_proto::token_transfer::{EventMeta, TokenTransferEvent};

    fn ledger(seq: u32) -> LedgerEvents {
        LedgerEvents {
            ledger: seq,
            events: vec![TokenTransferEvent {
                meta: Some(EventMeta {
                    ledger_sequence: seq,
                    ..Default::default()
                }),
                event: None,
            }],
        }
    }

    #[test]
    fn an_output_without_a_checkpoint_is_kept_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("events.jsonl");
        std::fs::write(&out, "kept\n").unwrap();
        let mut f = JsonlFile::open(&out).unwrap();
        assert_eq!(f.checkpoint(), 0);
        f.write(&[ledger(5)], 5).unwrap();
        f.sync().unwrap();
        let synced = std::fs::read_to_string(&out).unwrap();
        assert!(synced.starts_with("kept\n{"), "{synced}");
        drop(f);
        // Half a line written after the checkpoint, as a kill mid-write leaves it.
        let mut torn = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
        torn.write_all(b"{\"meta\":{\"ledgerSeq").unwrap();
        drop(torn);
        let f = JsonlFile::open(&out).unwrap();
        assert_eq!(f.checkpoint(), 5);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), synced);
    }
}
