//! Ledger entry changes as (before, after) pairs. Core writes each update or removal as a
//! `STATE` entry followed by `UPDATED`/`REMOVED`; creations and restorations stand alone.

use stellar_xdr::{LedgerEntry, LedgerEntryChange};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Updated,
    Removed,
    Restored,
}

#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    pub kind: ChangeKind,
    pub pre: Option<&'a LedgerEntry>,
    pub post: Option<&'a LedgerEntry>,
}

impl<'a> Change<'a> {
    /// The entry that decides the change's type: the prior state when there is one.
    pub fn typed_entry(&self) -> &'a LedgerEntry {
        self.pre
            .or(self.post)
            .expect("a change has at least one side")
    }
}

/// Pairs a group of raw changes. An update or removal without its preceding state is
/// malformed meta and is reported rather than guessed at.
pub fn pair(raw: &[LedgerEntryChange]) -> Result<Vec<Change<'_>>, String> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, c) in raw.iter().enumerate() {
        let previous = || -> Result<&LedgerEntry, String> {
            match i.checked_sub(1).map(|j| &raw[j]) {
                Some(LedgerEntryChange::State(e)) | Some(LedgerEntryChange::Restored(e)) => Ok(e),
                _ => Err(format!(
                    "ledger entry change {i} is an update or removal without a preceding state"
                )),
            }
        };
        match c {
            LedgerEntryChange::Created(e) => out.push(Change {
                kind: ChangeKind::Created,
                pre: None,
                post: Some(e),
            }),
            LedgerEntryChange::Updated(e) => out.push(Change {
                kind: ChangeKind::Updated,
                pre: Some(previous()?),
                post: Some(e),
            }),
            LedgerEntryChange::Removed(_) => out.push(Change {
                kind: ChangeKind::Removed,
                pre: Some(previous()?),
                post: None,
            }),
            LedgerEntryChange::Restored(e) => out.push(Change {
                kind: ChangeKind::Restored,
                pre: None,
                post: Some(e),
            }),
            LedgerEntryChange::State(_) => {}
        }
    }
    Ok(out)
}
