//! Reads `GetTTPEvents` and hands complete ledgers to the output. A ledger is complete
//! when an event of a later ledger arrives, or when a bounded stream ends cleanly. When the
//! stream breaks, the incomplete ledger is dropped and the sink reconnects with backoff
//! from the ledger after the last one written, so nothing is skipped or written twice.
//!
//! When the store rejects a batch (a value or a constraint of its table), the batch is
//! written again ledger by ledger: the rejected ledger fails the sink naming it, or, with
//! `on_error: dead-letter`, is recorded as a dead letter (its events as a JSON array) and
//! passed over, the checkpoint moving past it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowctl_proto::token_transfer::TokenTransferEvent;
use flowctl_proto::token_transfer_service::event_service_client::EventServiceClient;
use flowctl_proto::token_transfer_service::GetEventsRequest;

use super::health::Readiness;
use super::jsonl_file::JsonlFile;
use super::metrics::SinkMetrics;
use super::output::Output;
use super::postgres::PgSink;
use super::{LedgerEvents, SinkError};
use crate::backoff::Backoff;

pub enum Target {
    Output(Output),
    File(JsonlFile),
    Postgres(PgSink),
}

impl Target {
    /// The last ledger this target holds for sure, 0 when none (or when it keeps no
    /// checkpoint); the driver resumes after it.
    async fn checkpoint(&mut self) -> Result<u32, SinkError> {
        match self {
            Target::Output(_) => Ok(0),
            Target::File(f) => Ok(f.checkpoint()),
            Target::Postgres(p) => p.checkpoint().await,
        }
    }

    async fn write(&mut self, batch: &[LedgerEvents], through: u32) -> Result<(), SinkError> {
        match self {
            Target::Output(o) => o.write(batch),
            Target::File(f) => f.write(batch, through),
            Target::Postgres(p) => p.write(batch, through).await,
        }
    }

    /// A bounded run found its checkpoint at or past its end: the range was written before.
    /// PostgreSQL writes it again from `start` (idempotent, correcting rows that changed);
    /// a file is only appended to in ledger order, so it writes nothing. Returns the new
    /// checkpoint.
    async fn range_already_written(
        &mut self,
        checkpoint: u32,
        start: u32,
        end: u32,
    ) -> Result<u32, SinkError> {
        match self {
            Target::Postgres(p) => {
                let before = start.saturating_sub(1);
                tracing::info!(
                    checkpoint,
                    start,
                    end,
                    "this range was written before: writing it again from START_LEDGER \
                     (rows that did not change are left as they are)"
                );
                p.reset_checkpoint(before).await?;
                Ok(before)
            }
            Target::File(_) | Target::Output(_) => {
                tracing::warn!(
                    checkpoint,
                    start,
                    end,
                    "OUTPUT_FILE already holds every ledger through its checkpoint, at or \
                     past END_LEDGER: nothing to write (a file is appended to in ledger \
                     order; write a replay of older ledgers to another OUTPUT_FILE)"
                );
                Ok(checkpoint)
            }
        }
    }

    /// Called every flush interval: a file checkpoints what it wrote once that is due.
    fn tick(&mut self) -> Result<(), SinkError> {
        match self {
            Target::File(f) => f.sync_if_due(),
            Target::Output(_) | Target::Postgres(_) => Ok(()),
        }
    }

    /// Makes what was written durable and checkpointed, before the driver returns.
    fn finish(&mut self) -> Result<(), SinkError> {
        match self {
            Target::File(f) => f.sync(),
            Target::Output(_) | Target::Postgres(_) => Ok(()),
        }
    }
}

pub struct Driver {
    /// `host:port` or an `http://` URL of the processor.
    pub addr: String,
    pub start: u32,
    /// Last ledger wanted (inclusive); `None` = follow the live stream.
    pub end: Option<u32>,
    pub target: Target,
    pub readiness: Readiness,
    pub metrics: Arc<SinkMetrics>,
    /// Flush when this many events of complete ledgers are waiting…
    pub flush_events: usize,
    /// …or this long after the first of them arrived.
    pub flush_interval: Duration,
    pub max_backoff: Duration,
    /// With `on_error: dead-letter`: where the ledgers the store rejects are recorded.
    pub dead_letters: Option<flowctl_sdk::DeadLetters>,
}

/// What a finished run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    /// The last complete ledger written (0 when none).
    pub through: u32,
    /// Ledgers the store rejected, recorded as dead letters.
    pub dead_letters: u64,
}

struct Pending {
    ledgers: Vec<LedgerEvents>,
    events: usize,
    /// Every ledger up to here is complete (including those without events).
    through: Option<u32>,
    since: Option<Instant>,
}

/// How a stream to the processor ended.
enum Ended {
    /// It ended cleanly: for a bounded request, every event up to the end was sent.
    Clean,
    /// It broke, or its order could not be trusted: reconnect from the next ledger.
    Broken,
    /// The sink was told to stop.
    Stopped,
}

impl Driver {
    /// Runs until a bounded request is complete.
    pub async fn run(self) -> Result<Summary, SinkError> {
        self.run_until(std::future::pending()).await
    }

    /// Runs until a bounded request is complete or `stop` completes. Either way, the complete
    /// ledgers received are written and checkpointed before it returns; a ledger still
    /// arriving is dropped, to be asked for again by the next run.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Summary, SinkError> {
        tokio::pin!(stop);
        let resume = tokio::select! {
            r = self.target.checkpoint() => r?,
            _ = &mut stop => return Ok(Summary::default()),
        };
        let resume = match self.end {
            Some(end) if resume >= end && resume > 0 => {
                self.target
                    .range_already_written(resume, self.start, end)
                    .await?
            }
            _ => resume,
        };
        let mut next = if resume > 0 {
            self.start.max(resume + 1)
        } else {
            self.start
        };
        if resume > 0 && resume >= self.start {
            tracing::info!(
                checkpoint = resume,
                next,
                "resuming after the checkpoint: ledgers up to it are taken as written"
            );
        }
        let endpoint = if self.addr.contains("://") {
            self.addr.clone()
        } else {
            format!("http://{}", self.addr)
        };
        let mut summary = Summary {
            events: 0,
            through: resume,
            dead_letters: 0,
        };
        let mut backoff = Backoff::new(Duration::from_millis(100), self.max_backoff);
        loop {
            if let Some(end) = self.end {
                if next > end && next != 0 {
                    break;
                }
            }
            let request = GetEventsRequest {
                start_ledger: next,
                end_ledger: self.end.unwrap_or(0),
            };
            let stream = tokio::select! {
                s = open(&endpoint, request) => s,
                _ = &mut stop => break,
            };
            let mut stream = match stream {
                Ok(s) => s,
                Err(message) => {
                    let reason = format!("event service {} unreachable: {message}", self.addr);
                    let delay = backoff.next_delay();
                    tracing::warn!(retry_in = ?delay, "{reason}");
                    self.readiness.set_degraded(reason);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = &mut stop => break,
                    }
                    continue;
                }
            };
            // The database (if any) answered the checkpoint query or the last write; a
            // failing write marks the sink not ready again.
            self.readiness.set_ready();
            let asked_from = next;
            let mut current: Option<LedgerEvents> = None;
            let mut pending = Pending {
                ledgers: Vec::new(),
                events: 0,
                through: None,
                since: None,
            };
            let mut tick = tokio::time::interval(self.flush_interval);
            let ended = loop {
                tokio::select! {
                    msg = stream.message() => match msg {
                        Ok(Some(ev)) => {
                            if let Err(e) = accept(ev, next, &mut current, &mut pending) {
                                tracing::warn!(error = %e, "reconnecting");
                                break Ended::Broken;
                            }
                            if pending.events >= self.flush_events {
                                self.flush(&mut pending, &mut next, &mut summary).await?;
                            }
                        }
                        Ok(None) => break Ended::Clean,
                        // Upstream cannot read a ledger: keep what is complete and fail,
                        // naming it, rather than ask again forever.
                        Err(status) if status.code() == tonic::Code::DataLoss => {
                            self.flush(&mut pending, &mut next, &mut summary).await?;
                            return Err(SinkError::Upstream {
                                addr: self.addr.clone(),
                                message: status.message().to_string(),
                            });
                        }
                        Err(status) => {
                            tracing::warn!(code = ?status.code(), message = status.message(), "event stream broke");
                            break Ended::Broken;
                        }
                    },
                    _ = tick.tick() => {
                        if pending.since.is_some_and(|s| s.elapsed() >= self.flush_interval) {
                            self.flush(&mut pending, &mut next, &mut summary).await?;
                        }
                        self.target.tick()?;
                    }
                    _ = &mut stop => break Ended::Stopped,
                }
            };
            if let (Ended::Clean, Some(end)) = (&ended, self.end) {
                // A bounded stream that ends cleanly has sent every event up to `end`.
                if let Some(c) = current.take() {
                    pending.events += c.events.len();
                    pending.ledgers.push(c);
                }
                pending.through = Some(end);
                self.flush(&mut pending, &mut next, &mut summary).await?;
                break;
            }
            // Keep what is complete; the partial ledger comes again after reconnecting.
            self.flush(&mut pending, &mut next, &mut summary).await?;
            if let Ended::Stopped = ended {
                break;
            }
            // Only a ledger completed on this stream is progress: events of one that never
            // completes (an upstream ending each stream early) must not keep the wait short.
            if next > asked_from {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            tracing::warn!(
                next,
                retry_in = ?delay,
                "reconnecting to the event service {}",
                self.addr
            );
            self.readiness
                .set_degraded(format!("reconnecting to {} from ledger {next}", self.addr));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut stop => break,
            }
        }
        self.target.finish()?;
        Ok(summary)
    }

    async fn flush(
        &mut self,
        pending: &mut Pending,
        next: &mut u32,
        summary: &mut Summary,
    ) -> Result<(), SinkError> {
        let Some(through) = pending.through else {
            return Ok(());
        };
        let mut written = pending.events as u64;
        match self.target.write(&pending.ledgers, through).await {
            Ok(()) => {}
            Err(SinkError::Rejected { message, .. }) => {
                tracing::warn!(error = %message, "writing the batch again ledger by ledger");
                let (set_aside, events) = self.write_each(&pending.ledgers, through).await?;
                summary.dead_letters += set_aside;
                written -= events;
            }
            Err(e) => return Err(e),
        }
        summary.events += written;
        self.metrics.written(written, through);
        summary.through = through;
        *next = through + 1;
        pending.ledgers.clear();
        pending.events = 0;
        pending.through = None;
        pending.since = None;
        Ok(())
    }
}

impl Driver {
    /// Writes `ledgers` one at a time after the store rejected them together, then moves
    /// the checkpoint to `through`. A ledger still rejected fails the sink naming it, or is
    /// recorded as a dead letter and passed over. Returns the ledgers and events set aside.
    async fn write_each(
        &mut self,
        ledgers: &[LedgerEvents],
        through: u32,
    ) -> Result<(u64, u64), SinkError> {
        let (mut letters, mut events) = (0, 0);
        for l in ledgers {
            let message = match self.target.write(std::slice::from_ref(l), l.ledger).await {
                Ok(()) => continue,
                Err(SinkError::Rejected { message, .. }) => message,
                Err(e) => return Err(e),
            };
            let Some(dead_letters) = &self.dead_letters else {
                return Err(SinkError::Rejected {
                    ledger: Some(l.ledger),
                    message,
                });
            };
            let reason = format!(
                "ledger {}: PostgreSQL rejected its events: {message}",
                l.ledger
            );
            if let Err(e) = dead_letters
                .report(l.ledger, &reason, &events_json(l).into_bytes())
                .await
            {
                // Not recorded: passing over the ledger would lose it.
                return Err(SinkError::DeadLetter(format!("{reason}; {e}")));
            }
            tracing::warn!(ledger = l.ledger, error = %message, "ledger set aside as a dead letter");
            self.target.write(&[], l.ledger).await?;
            letters += 1;
            events += l.events.len() as u64;
        }
        self.target.write(&[], through).await?;
        Ok((letters, events))
    }
}

/// The events of a ledger as a JSON array, in the shape of the JSON-lines output.
fn events_json(l: &LedgerEvents) -> String {
    let mut text = String::from("[");
    for (i, ev) in l.events.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        stellar_ttp::write_json(&mut text, ev);
    }
    text.push(']');
    text
}

/// Files one event; returns an error when the stream's order cannot be trusted.
fn accept(
    ev: TokenTransferEvent,
    next: u32,
    current: &mut Option<LedgerEvents>,
    pending: &mut Pending,
) -> Result<(), String> {
    let ledger = ev.meta.as_ref().map(|m| m.ledger_sequence).unwrap_or(0);
    if ledger == 0 {
        return Err("an event without meta.ledger_sequence".into());
    }
    if next != 0 && ledger < next {
        return Err(format!(
            "event of ledger {ledger} before the requested {next}"
        ));
    }
    match current {
        Some(c) if c.ledger == ledger => c.events.push(ev),
        Some(c) if ledger < c.ledger => {
            return Err(format!(
                "event of ledger {ledger} after one of ledger {}",
                c.ledger
            ))
        }
        _ => {
            if let Some(done) = current.take() {
                pending.events += done.events.len();
                pending.ledgers.push(done);
                pending.since.get_or_insert_with(Instant::now);
            }
            if pending.ledgers.is_empty() && next != 0 && ledger > next {
                pending.since.get_or_insert_with(Instant::now);
            }
            if next != 0 || pending.through.is_some() || !pending.ledgers.is_empty() {
                pending.through = Some(ledger - 1);
            }
            *current = Some(LedgerEvents {
                ledger,
                events: vec![ev],
            });
        }
    }
    Ok(())
}

/// A `GetTTPEvents` stream from the processor at `endpoint`.
async fn open(
    endpoint: &str,
    request: GetEventsRequest,
) -> Result<tonic::Streaming<TokenTransferEvent>, String> {
    let e = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| format!("{e}: {}", source_chain(&e)))?;
    let channel = crate::grpc::streaming(e)
        .connect()
        .await
        .map_err(|e| format!("{e}: {}", source_chain(&e)))?;
    EventServiceClient::new(channel)
        .get_ttp_events(request)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.to_string())
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut src = e.source();
    while let Some(s) = src {
        out.push(s.to_string());
        src = s.source();
    }
    out.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_proto::token_transfer::EventMeta;

    fn ev(ledger: u32) -> TokenTransferEvent {
        TokenTransferEvent {
            meta: Some(EventMeta {
                ledger_sequence: ledger,
                ..Default::default()
            }),
            event: None,
        }
    }

    /// Feeds events of these ledgers after asking from `next`; returns the ledgers made
    /// complete, how many events they hold, and the checkpoint they allow.
    fn feed(next: u32, ledgers: &[u32]) -> Result<(Vec<u32>, usize, Option<u32>), String> {
        let mut current = None;
        let mut pending = Pending {
            ledgers: Vec::new(),
            events: 0,
            through: None,
            since: None,
        };
        for l in ledgers {
            accept(ev(*l), next, &mut current, &mut pending)?;
        }
        Ok((
            pending.ledgers.iter().map(|l| l.ledger).collect(),
            pending.events,
            pending.through,
        ))
    }

    /// (requested start, ledgers of the events, complete ledgers, their events, checkpoint)
    type Row = (u32, &'static [u32], Vec<u32>, usize, Option<u32>);

    #[test]
    fn a_ledger_completes_when_a_later_one_starts() {
        let table: &[Row] = &[
            // Nothing is complete while only one ledger has been seen.
            (10, &[10, 10], vec![], 0, Some(9)),
            (10, &[10, 10, 11], vec![10], 2, Some(10)),
            // Ledgers without events between two with events are complete too.
            (10, &[10, 14], vec![10], 1, Some(13)),
            // Events starting after the requested ledger: the gap is complete at once.
            (10, &[12], vec![], 0, Some(11)),
            // Without a requested start, nothing before the first ledger is claimed.
            (0, &[7], vec![], 0, None),
            (0, &[7, 8], vec![7], 1, Some(7)),
        ];
        for (next, ledgers, done, events, through) in table {
            assert_eq!(
                feed(*next, ledgers).unwrap(),
                (done.clone(), *events, *through),
                "next {next}, ledgers {ledgers:?}"
            );
        }
    }

    #[test]
    fn out_of_order_or_early_events_are_refused() {
        assert!(feed(10, &[11, 10])
            .unwrap_err()
            .contains("after one of ledger 11"));
        assert!(feed(10, &[9])
            .unwrap_err()
            .contains("before the requested 10"));
        assert!(feed(10, &[0]).unwrap_err().contains("ledger_sequence"));
    }
}
