use std::fmt;
use std::path::{Path, PathBuf};

/// A failure to read ledgers, naming the file and, where known, the ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ReadError {
    pub path: PathBuf,
    /// The ledger sequence, or the 1-based line/frame number as `item` when the sequence
    /// could not be decoded.
    pub ledger: Option<u32>,
    pub item: Option<String>,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    Io(String),
    Zstd(String),
    Xdr(String),
    Base64(String),
    Manifest(String),
    Missing(String),
    Usage(String),
}

impl ReadError {
    pub(crate) fn new(path: &Path, ledger: Option<u32>, kind: ErrorKind) -> Self {
        Self {
            path: path.to_path_buf(),
            ledger,
            item: None,
            kind,
        }
    }

    pub(crate) fn at(mut self, item: impl Into<String>) -> Self {
        self.item = Some(item.into());
        self
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(item) = &self.item {
            write!(f, ": {item}")?;
        }
        if let Some(ledger) = self.ledger {
            write!(f, ": ledger {ledger}")?;
        }
        match &self.kind {
            ErrorKind::Io(e) => write!(f, ": cannot read: {e}"),
            ErrorKind::Zstd(e) => write!(f, ": not valid zstd: {e}"),
            ErrorKind::Xdr(e) => write!(f, ": not a valid LedgerCloseMeta: {e}"),
            ErrorKind::Base64(e) => write!(f, ": not valid base64: {e}"),
            ErrorKind::Manifest(e) => write!(f, ": bad data-lake manifest: {e}"),
            ErrorKind::Missing(e) => write!(f, ": {e}"),
            ErrorKind::Usage(e) => write!(f, ": {e}"),
        }
    }
}
