//! `flowctl dlq ls|show|replay|purge`: the dead letters components set aside, over the
//! registry or straight from a state dir's store.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};
use flowctl_proto::flowctl::v1::{
    DeadLetter, DeadLetterStatus, GetDeadLetterRequest, ListDeadLettersRequest,
    PurgeDeadLettersRequest,
};
use serde_json::json;

use super::list::{ago, block_on, print_table, rfc3339, status_error, Conn, Output};
use super::replay::{self, ReplayArgs};
use crate::registry::dead_letter_grpc::MAX_LISTED;
use crate::registry::dead_letters::{
    status_word, DeadLetterFilter, DeadLetterStore, DEAD_LETTERS_DB,
};
use crate::registry::store::RunStore;
use crate::replay::ReplayRange;

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
    /// Replays the ledgers of open dead letters (contiguous ledgers as one bounded replay);
    /// a letter is resolved when its replay completes without failing on it again. With
    /// --state-dir, runs the pipeline config of the letter's run in the foreground.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Replay {
        /// Replay this dead letter's ledger.
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// With --all: the pipeline whose open letters to replay.
        #[arg(long, value_name = "P", requires = "all", conflicts_with = "id")]
        pipeline: Option<String>,
        /// Every open letter of --pipeline.
        #[arg(long, requires = "pipeline")]
        all: bool,
        /// Follow each replay to its end; exit 0 only when all completed and resolved their
        /// letters (a --state-dir replay always runs to its end).
        #[arg(long)]
        wait: bool,
        /// With --state-dir: directory of the foreground run's control socket.
        #[arg(long, value_name = "DIR")]
        runtime_dir: Option<PathBuf>,
        /// With --state-dir: process groups only, no cgroups.
        #[arg(long)]
        no_cgroups: bool,
    },
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
        // A --state-dir replay runs a pipeline, which takes a runtime of its own: it starts
        // once the letters are read and their store is closed.
        let mut foreground = None;
        let pending = &mut foreground;
        let code = block_on(async move {
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
                DlqCommand::Replay {
                    id,
                    pipeline,
                    all: _,
                    wait,
                    runtime_dir,
                    no_cgroups,
                } => {
                    let chosen = match (id, pipeline) {
                        (Some(id), _) => vec![letters.get(&id).await?],
                        (None, Some(pipeline)) => {
                            let (list, truncated) = letters
                                .list(Some(pipeline.clone()), Some(DeadLetterStatus::Open))
                                .await?;
                            if truncated {
                                eprintln!(
                                    "note: only the newest {} open letters are replayed; run \
                                     it again for the rest",
                                    list.len()
                                );
                            }
                            if list.is_empty() {
                                nothing_to_do(
                                    self.conn.output,
                                    &format!("pipeline {pipeline:?} has no open dead letters"),
                                );
                                return Ok(0);
                            }
                            list
                        }
                        (None, None) => unreachable!("clap requires --id or --all"),
                    };
                    let open: Vec<DeadLetter> = chosen
                        .into_iter()
                        .filter(|l| {
                            let open = l.status() == DeadLetterStatus::Open;
                            if !open {
                                nothing_to_do(
                                    self.conn.output,
                                    &format!(
                                        "dead letter {} is already resolved; nothing to replay",
                                        l.id
                                    ),
                                );
                            }
                            open
                        })
                        .collect();
                    if open.is_empty() {
                        return Ok(0);
                    }
                    let ranges = ranges_of(&open)?;
                    match letters {
                        Letters::Registry(mut client) => {
                            replay_by_registry(&mut client, &self.conn, ranges, wait).await
                        }
                        Letters::Store(_) => {
                            let dir = self.state_dir.clone().expect("a store has a state dir");
                            let how = Foreground {
                                dir,
                                runtime_dir,
                                no_cgroups,
                                output: self.conn.output,
                            };
                            *pending = Some((how, ranges));
                            Ok(0)
                        }
                    }
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
        })?;
        match foreground {
            Some((how, ranges)) => replay_in_foreground(&how, &ranges),
            None => Ok(code),
        }
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
            Letters::Registry(c) => Self::get_from(c, id).await,
            Letters::Store(store) => store.get(id)?.with_context(|| {
                format!("no dead letter has id {id:?} (flowctl dlq ls lists them)")
            }),
        }
    }

    async fn get_from(
        client: &mut crate::registry::client::RegistryClient,
        id: &str,
    ) -> anyhow::Result<DeadLetter> {
        Ok(client
            .dlq
            .get(GetDeadLetterRequest { id: id.into() })
            .await
            .map_err(status_error)?
            .into_inner())
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

/// Says a replay has nothing to do: on stdout, or with `-o json` on stderr after an empty list
/// of started replays.
fn nothing_to_do(output: Output, why: &str) {
    match output {
        Output::Json => {
            println!("[]");
            eprintln!("{why}");
        }
        Output::Table => println!("{why}"),
    }
}

/// Letters whose ledgers follow one another, replayed as one range.
#[derive(Debug, PartialEq)]
struct LetterRange {
    pipeline: String,
    range: ReplayRange,
    letters: Vec<DeadLetter>,
}

/// Groups `letters` into ranges of contiguous ledgers per pipeline (998, 999, 1005 →
/// 998-999, 1005-1005); letters of the same ledger share its range.
fn ranges_of(letters: &[DeadLetter]) -> anyhow::Result<Vec<LetterRange>> {
    let mut sorted: Vec<&DeadLetter> = letters.iter().collect();
    sorted.sort_by(|a, b| (&a.pipeline, a.ledger).cmp(&(&b.pipeline, b.ledger)));
    let mut ranges: Vec<LetterRange> = Vec::new();
    for l in sorted {
        let ledger = Some(l.ledger).filter(|n| *n > 0).with_context(|| {
            format!(
                "dead letter {} has ledger {}, which no replay can run",
                l.id, l.ledger
            )
        })?;
        match ranges.last_mut() {
            Some(r) if r.pipeline == l.pipeline && ledger <= r.range.to.saturating_add(1) => {
                r.range.to = r.range.to.max(ledger);
                r.letters.push(l.clone());
            }
            _ => ranges.push(LetterRange {
                pipeline: l.pipeline.clone(),
                range: ReplayRange::new(ledger, ledger).map_err(anyhow::Error::msg)?,
                letters: vec![l.clone()],
            }),
        }
    }
    Ok(ranges)
}

fn ids(letters: &[DeadLetter]) -> Vec<String> {
    letters.iter().map(|l| l.id.clone()).collect()
}

/// One StartReplay per range; with `wait`, follows each to its end and checks its letters.
async fn replay_by_registry(
    client: &mut crate::registry::client::RegistryClient,
    conn: &Conn,
    ranges: Vec<LetterRange>,
    wait: bool,
) -> anyhow::Result<i32> {
    let mut started = Vec::new();
    for r in &ranges {
        let run = replay::start(client, &r.pipeline, r.range, ids(&r.letters))
            .await
            .with_context(|| {
                format!(
                    "cannot start the replay of ledgers {}-{} of {:?}",
                    r.range.from, r.range.to, r.pipeline
                )
            })?;
        started.push(run);
    }
    if !wait {
        match conn.output {
            Output::Json => {
                let items: Vec<_> = ranges
                    .iter()
                    .zip(&started)
                    .map(|(r, s)| {
                        json!({
                            "instance": s.instance,
                            "run_id": s.run_id,
                            "from_ledger": r.range.from,
                            "to_ledger": r.range.to,
                            "letters": ids(&r.letters),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
            }
            Output::Table => {
                for (r, s) in ranges.iter().zip(&started) {
                    println!(
                        "replay {} started: run {} for dead letter(s) {} (follow it with \
                         `flowctl pipelines get {}`)",
                        s.instance,
                        s.run_id,
                        ids(&r.letters).join(", "),
                        s.run_id
                    );
                }
            }
        }
        return Ok(0);
    }
    let mut code = 0;
    for (r, s) in ranges.iter().zip(&started) {
        let ended = replay::follow(client, conn, s, true).await?;
        code = code.max(ended);
        if ended == 0 {
            code = code.max(check_resolved(client, &r.letters, &s.run_id).await?);
        }
    }
    Ok(code)
}

/// After a completed replay: 0 when the daemon resolved every letter of it, 1 (saying which)
/// when the replay failed on a letter's ledger again.
async fn check_resolved(
    client: &mut crate::registry::client::RegistryClient,
    letters: &[DeadLetter],
    run_id: &str,
) -> anyhow::Result<i32> {
    // The daemon resolves a replay's letters as it takes the finished replay out, which may
    // come a moment after its run record ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut open = Vec::new();
    for l in letters {
        loop {
            let now = Letters::get_from(client, &l.id).await?;
            if now.status() != DeadLetterStatus::Open {
                break;
            }
            if now.run_id == run_id || std::time::Instant::now() > deadline {
                open.push(l.id.clone());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    if open.is_empty() {
        return Ok(0);
    }
    eprintln!(
        "flowctl: the replay failed on the ledgers of dead letter(s) {} again; they stay open",
        open.join(", ")
    );
    Ok(1)
}

/// How a `--state-dir` replay runs.
struct Foreground {
    dir: PathBuf,
    runtime_dir: Option<PathBuf>,
    no_cgroups: bool,
    output: Output,
}

/// Runs each range in the foreground with the pipeline config of its newest letter's run;
/// 0 only when every run completed and resolved its letters.
fn replay_in_foreground(how: &Foreground, ranges: &[LetterRange]) -> anyhow::Result<i32> {
    let mut code = 0;
    for r in ranges {
        let newest = r
            .letters
            .iter()
            .max_by_key(|l| l.last_seen.as_ref().map(|t| (t.seconds, t.nanos)))
            .expect("a range has letters");
        let text = {
            let runs = RunStore::open(&how.dir, usize::MAX)?;
            let run = runs.get(&newest.run_id)?.with_context(|| {
                format!(
                    "run {} of dead letter {} is no longer in the run history of {}, so its \
                     pipeline config is unknown; replay the ledgers with \
                     `flowctl replay -f FILE --from-ledger {} --to-ledger {}`",
                    newest.run_id,
                    newest.id,
                    how.dir.display(),
                    r.range.from,
                    r.range.to
                )
            })?;
            run.config_yaml
        };
        let args = ReplayArgs {
            file: None,
            pipeline: None,
            from_ledger: r.range.from,
            to_ledger: r.range.to,
            wait: false,
            state_dir: Some(how.dir.clone()),
            runtime_dir: how.runtime_dir.clone(),
            no_cgroups: how.no_cgroups,
            conn: Conn {
                endpoint: None,
                output: how.output,
            },
        };
        let name = PathBuf::from(format!("run {}", newest.run_id));
        let ran = replay::foreground_text(&name, &text, r.range, &args, ids(&r.letters))?;
        code = code.max(ran);
        let store = DeadLetterStore::open(&how.dir)?;
        let open: Vec<String> = r
            .letters
            .iter()
            .filter_map(|l| store.get(&l.id).transpose())
            .filter_map(|l| l.ok())
            .filter(|l| l.status() == DeadLetterStatus::Open)
            .map(|l| l.id)
            .collect();
        if !open.is_empty() {
            crate::stderr_line!(
                "flowctl: dead letter(s) {} stay open; `flowctl dlq show ID --state-dir {}` \
                 says why",
                open.join(", "),
                how.dir.display()
            );
            code = code.max(1);
        }
    }
    Ok(code)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(id: &str, pipeline: &str, ledger: u32) -> DeadLetter {
        DeadLetter {
            id: id.into(),
            pipeline: pipeline.into(),
            ledger,
            status: DeadLetterStatus::Open as i32,
            ..Default::default()
        }
    }

    fn spans(ranges: &[LetterRange]) -> Vec<(String, u32, u32, Vec<String>)> {
        ranges
            .iter()
            .map(|r| {
                (
                    r.pipeline.clone(),
                    r.range.from,
                    r.range.to,
                    ids(&r.letters),
                )
            })
            .collect()
    }

    #[test]
    fn contiguous_ledgers_make_one_range_and_a_gap_or_another_pipeline_starts_the_next() {
        let letters = [
            letter("c", "p", 1005),
            letter("a", "p", 998),
            letter("b", "p", 999),
            letter("b2", "p", 999),
            letter("q", "q", 1000),
        ];
        let s = |x: &str| x.to_string();
        assert_eq!(
            spans(&ranges_of(&letters).unwrap()),
            vec![
                (s("p"), 998, 999, vec![s("a"), s("b"), s("b2")]),
                (s("p"), 1005, 1005, vec![s("c")]),
                (s("q"), 1000, 1000, vec![s("q")]),
            ]
        );
    }

    #[test]
    fn a_letter_without_a_ledger_is_an_error_naming_it() {
        let err = ranges_of(&[letter("x", "p", 0)]).unwrap_err().to_string();
        assert!(err.contains("dead letter x has ledger 0"), "{err}");
    }
}
