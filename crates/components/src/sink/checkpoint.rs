//! The sidecar checkpoint of a JSON-lines file, `OUTPUT.checkpoint`: how many bytes of the
//! output are complete and the last ledger they hold. It is replaced atomically (a temporary
//! file, fsync, rename, fsync of the directory), so a kill leaves either the old or the new
//! one, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SinkError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Every ledger up to this one is in the output (0: none yet).
    pub last_ledger: u32,
    /// The output's bytes up to here are complete lines of those ledgers (and of whatever
    /// the file held before this sink first wrote to it).
    pub offset: u64,
}

/// Where the checkpoint of `output` lives: next to it, `OUTPUT.checkpoint`.
pub fn path_for(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".checkpoint");
    PathBuf::from(name)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The checkpoint at `path`, `None` when there is none. A file that is not a checkpoint is an
/// error naming it: guessing would lose or duplicate events.
pub fn load(path: &Path) -> Result<Option<Checkpoint>, SinkError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| SinkError::Checkpoint {
            path: path.display().to_string(),
            message: format!(
                "not a checkpoint ({e}); expected {{\"last_ledger\":N,\"offset\":N}}. \
                 Move it aside together with the output to start over"
            ),
        })
}

/// Replaces the checkpoint at `path` with `c`, durably.
pub fn store(path: &Path, c: Checkpoint) -> Result<(), SinkError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut text = serde_json::to_vec(&c).expect("a checkpoint serializes");
    text.push(b'\n');
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&text).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_checkpoint_loads_back_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = path_for(&dir.path().join("events.jsonl"));
        assert!(p.ends_with("events.jsonl.checkpoint"));
        assert_eq!(load(&p).unwrap(), None);
        let c = Checkpoint {
            last_ledger: 7,
            offset: 1234,
        };
        store(&p, c).unwrap();
        assert_eq!(load(&p).unwrap(), Some(c));
    }

    #[test]
    fn a_corrupt_checkpoint_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = path_for(&dir.path().join("events.jsonl"));
        for bad in [
            &b""[..],
            b"{\"last_ledger\":7}",
            b"{\"last_ledger\":7,\"offset\":-1}",
            b"garbage",
        ] {
            std::fs::write(&p, bad).unwrap();
            let e = load(&p).unwrap_err().to_string();
            assert!(e.contains(&p.display().to_string()), "{e}");
            assert!(e.contains("not a checkpoint"), "{e}");
        }
    }
}
