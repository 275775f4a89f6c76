//! `flowctl dlq ls|show|purge`: the dead letters components set aside, over the registry or
//! straight from a state dir's store.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};
use flowctl_proto::flowctl::v1::{
    DeadLetter, DeadLetterStatus, GetDeadLetterRequest, ListDeadLettersRequest,
    PurgeDeadLettersRequest,
};
use serde_json::json;

use super::list::{ago, block_on, print_table, rfc3339, status_error, Conn, Output};
use crate::registry::dead_letter_grpc::MAX_LISTED;
use crate::registry::dead_letters::{
    status_word, DeadLetterFilter, DeadLetterStore, DEAD_LETTERS_DB,
};

#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: DlqCommand,
    #[command(flatten)]
    conn: Conn,
    /// Read and change the store in this state dir directly instead of asking the registry
    /// (when no daemon runs there).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Dead letters, newest first.
    Ls {
        /// Only this pipeline's.
        #[arg(long)]
        pipeline: Option<String>,
        /// Resolved ones too.
        #[arg(long)]
        all: bool,
    },
    /// One dead letter in detail, its payload's size and first bytes.
    Show { id: String },
    /// Deletes dead letters: all of them, or with --resolved only the resolved ones.
    Purge {
        #[arg(long)]
        resolved: bool,
        /// Only this pipeline's.
        #[arg(long)]
        pipeline: Option<String>,
    },
}

/// Where the letters are.
enum Letters {
    Registry(Box<crate::registry::client::RegistryClient>),
    Store(DeadLetterStore),
}

impl Args {
    pub fn run(self) -> anyhow::Result<i32> {
        block_on(async move {
            let mut letters = match &self.state_dir {
                Some(dir) => {
                    if !dir.join(DEAD_LETTERS_DB).exists() {
                        anyhow::bail!(
                            "{} holds no dead-letter store ({DEAD_LETTERS_DB})",
                            dir.display()
                        );
                    }
                    Letters::Store(DeadLetterStore::open(dir)?)
                }
                None => Letters::Registry(Box::new(self.conn.connect().await?)),
            };
            match self.command {
                DlqCommand::Ls { pipeline, all } => {
                    let status = (!all).then_some(DeadLetterStatus::Open);
                    let (list, truncated) = letters.list(pipeline, status).await?;
                    if truncated {
                        eprintln!(
                            "note: more dead letters exist; only the newest {} are shown",
                            list.len()
                        );
                    }
                    print_letters(self.conn.output, &list)
                }
                DlqCommand::Show { id } => {
                    let letter = letters.get(&id).await?;
                    print_letter(self.conn.output, &letter)
                }
                DlqCommand::Purge { resolved, pipeline } => {
                    let purged = letters.purge(resolved, pipeline).await?;
                    match self.conn.output {
                        Output::Json => println!("{}", json!({ "purged": purged })),
                        Output::Table => println!("purged {purged} dead letter(s)"),
                    }
                    Ok(0)
                }
            }
        })
    }
}

impl Letters {
    async fn list(
        &mut self,
        pipeline: Option<String>,
        status: Option<DeadLetterStatus>,
    ) -> anyhow::Result<(Vec<DeadLetter>, bool)> {
        match self {
            Letters::Registry(c) => {
                let answer = c
                    .dlq
                    .list(ListDeadLettersRequest {
                        pipeline: pipeline.unwrap_or_default(),
                        status: status.unwrap_or(DeadLetterStatus::Unspecified) as i32,
                        ..Default::default()
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                Ok((answer.letters, answer.truncated))
            }
            Letters::Store(store) => {
                let mut list = store.list(&DeadLetterFilter {
                    pipeline,
                    status,
                    limit: MAX_LISTED + 1,
                    ..Default::default()
                })?;
                let truncated = list.len() > MAX_LISTED;
                list.truncate(MAX_LISTED);
                Ok((list, truncated))
            }
        }
    }

    async fn get(&mut self, id: &str) -> anyhow::Result<DeadLetter> {
        match self {
            Letters::Registry(c) => Ok(c
                .dlq
                .get(GetDeadLetterRequest { id: id.into() })
                .await
                .map_err(status_error)?
                .into_inner()),
            Letters::Store(store) => store.get(id)?.with_context(|| {
                format!("no dead letter has id {id:?} (flowctl dlq ls lists them)")
            }),
        }
    }

    async fn purge(
        &mut self,
        resolved_only: bool,
        pipeline: Option<String>,
    ) -> anyhow::Result<u64> {
        match self {
            Letters::Registry(c) => Ok(c
                .dlq
                .purge(PurgeDeadLettersRequest {
                    resolved_only,
                    pipeline: pipeline.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .purged),
            Letters::Store(store) => Ok(store.purge(resolved_only, pipeline.as_deref())?),
        }
    }
}

fn letter_json(l: &DeadLetter) -> serde_json::Value {
    json!({
        "id": l.id,
        "pipeline": l.pipeline,
        "component": l.component,
        "run_id": l.run_id,
        "ledger": l.ledger,
        "reason": l.reason,
        "status": status_word(l.status()),
        "attempts": l.attempts,
        "first_seen": l.first_seen.as_ref().map(rfc3339),
        "last_seen": l.last_seen.as_ref().map(rfc3339),
        "payload_size": l.payload_size,
        "payload_truncated": l.payload_truncated,
    })
}

fn print_letters(output: Output, letters: &[DeadLetter]) -> anyhow::Result<i32> {
    match output {
        Output::Json => {
            let items: Vec<_> = letters.iter().map(letter_json).collect();
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
        Output::Table => {
            if letters.is_empty() {
                println!("no dead letters");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = letters
                .iter()
                .map(|l| {
                    vec![
                        l.id.clone(),
                        l.pipeline.clone(),
                        l.component.clone(),
                        l.ledger.to_string(),
                        status_word(l.status()).to_string(),
                        l.attempts.to_string(),
                        l.last_seen.as_ref().map(ago).unwrap_or_default(),
                        first_line(&l.reason, 80),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "PIPELINE",
                    "COMPONENT",
                    "LEDGER",
                    "STATUS",
                    "ATTEMPTS",
                    "LAST SEEN",
                    "REASON",
                ],
                &rows,
            );
        }
    }
    Ok(0)
}

fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_string()
    }
}

fn print_letter(output: Output, l: &DeadLetter) -> anyhow::Result<i32> {
    match output {
        Output::Json => {
            let mut v = letter_json(l);
            v["payload_hex"] = json!(hex(&l.payload));
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Table => {
            let v = letter_json(l);
            for key in [
                "id",
                "pipeline",
                "component",
                "run_id",
                "ledger",
                "status",
                "attempts",
                "first_seen",
                "last_seen",
                "reason",
            ] {
                let value = match &v[key] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                println!("{key:<11} {}", super::text::escape(&value));
            }
            let cut = if l.payload_truncated {
                ", cut short"
            } else {
                ""
            };
            println!(
                "{:<11} {} bytes{cut}; first bytes: {}",
                "payload",
                l.payload_size,
                hex(&l.payload[..l.payload.len().min(32)])
            );
        }
    }
    Ok(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
