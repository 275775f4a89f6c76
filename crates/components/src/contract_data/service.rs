//! One pipeline per stream: raw ledgers from the source (`RawLedgerService`, reconnecting
//! from the next ledger when it goes away), decoded and reduced to their contract-data
//! changes on blocking threads, several ledgers at once but delivered in ledger order.
//! The gRPC service streams the changes one by one; the Flight service gathers them into
//! record batches of `BATCH_SIZE` rows that never split a ledger.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use flowctl_proto::contract_data::contract_data_service_server::ContractDataService;
use flowctl_proto::contract_data::{ContractDataChange as ChangeMessage, GetContractDataRequest};
use futures::{Stream, StreamExt};
use stellar_contract_data::{ContractDataChange, Extractor, Filter};
use stellar_xdr::{LedgerCloseMeta, Limits, ReadXdr};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};

use super::batches;
use super::metrics::{ContractDataMetrics, Session};
use crate::arrow::flight::{Batches, RangeProducer};
use crate::arrow::ticket::LedgerTicket;
use crate::backoff::Backoff;
use crate::processor::readiness::Readiness;
use crate::processor::upstream::LedgerFeed;
use crate::shutdown::Shutdown;

/// Ledgers in processing at once for one stream (as `ttp-processor`).
const PIPELINE: usize = 8;

/// The changes of one ledger that the filters kept, in ledger order.
#[derive(Debug, Clone)]
pub struct LedgerChanges {
    pub ledger: u32,
    pub changes: Vec<ContractDataChange>,
}

#[derive(Clone)]
pub struct Processor {
    pub extractor: Arc<Extractor>,
    pub filter: Arc<Filter>,
    pub upstream: Endpoint,
    pub backoff: Backoff,
    pub readiness: Readiness,
    pub metrics: Arc<ContractDataMetrics>,
    pub shutdown: Shutdown,
    /// With `on_error: dead-letter`: ledgers that cannot be processed are recorded here
    /// and passed over; without, such a ledger ends the stream with DATA_LOSS naming it.
    pub dead_letters: Option<flowctl_sdk::DeadLetters>,
    /// Rows per Flight batch (`BATCH_SIZE`), and the longest a Flight holds rows back while
    /// ledgers arrive slowly (live).
    pub batch_rows: usize,
    pub batch_wait: Duration,
    /// The range `ListFlights` offers.
    pub offered: Option<LedgerTicket>,
}

/// Decodes a raw ledger and extracts its changes, split into (kept, skipped).
pub fn process_raw(
    extractor: &Extractor,
    filter: &Filter,
    xdr: &[u8],
) -> Result<(Vec<ContractDataChange>, usize), String> {
    let limits = Limits {
        depth: 500,
        len: xdr.len(),
    };
    let lcm = LedgerCloseMeta::from_xdr(xdr, limits)
        .map_err(|e| format!("not a valid LedgerCloseMeta: {e}"))?;
    let all = extractor.changes(&lcm).map_err(|e| e.message)?;
    let total = all.len();
    let kept: Vec<_> = all.into_iter().filter(|c| filter.keeps(c)).collect();
    let skipped = total - kept.len();
    Ok((kept, skipped))
}

impl Processor {
    /// The changes of `start..=end` (to the tip without `end`), a ledger at a time, every
    /// ledger included even without changes. A bounded range's stream ends after `end`; one
    /// that stops before (the processor stopping) ends with UNAVAILABLE.
    pub fn ledgers(
        &self,
        start: u32,
        end: Option<u32>,
    ) -> impl Stream<Item = Result<LedgerChanges, Status>> + Send + 'static {
        let p = self.clone();
        let (tx, rx) = mpsc::channel(PIPELINE);
        tokio::spawn(async move {
            let feed = LedgerFeed::new(p.upstream.clone(), start, p.backoff, p.readiness.clone());
            let raw = futures::stream::unfold((feed, false), move |(mut feed, done)| async move {
                if done {
                    return None;
                }
                match feed.next().await {
                    Ok(raw) if end.is_some_and(|e| raw.sequence > e) => None,
                    Ok(raw) => {
                        let last = end.is_some_and(|e| raw.sequence >= e);
                        Some((Ok(raw), (feed, last)))
                    }
                    Err(status) => Some((Err(status), (feed, true))),
                }
            });
            let worker = p.clone();
            let mut processed = raw
                .map(move |raw| {
                    let p = worker.clone();
                    async move {
                        let raw = raw?;
                        let seq = raw.sequence;
                        let xdr = raw.ledger_close_meta_xdr;
                        // Set aside by the source (its dead letter): no changes, no gap.
                        if xdr.is_empty() {
                            return Ok((seq, Ok((Vec::new(), 0)), xdr));
                        }
                        let (extractor, filter) = (p.extractor.clone(), p.filter.clone());
                        let bytes = xdr.clone();
                        let started = Instant::now();
                        let result = tokio::task::spawn_blocking(move || {
                            process_raw(&extractor, &filter, &bytes)
                        })
                        .await
                        .unwrap_or_else(|e| Err(format!("processing task failed: {e}")));
                        if let Ok((kept, skipped)) = &result {
                            p.metrics.ledger(
                                seq,
                                xdr.len(),
                                kept.len(),
                                *skipped,
                                started.elapsed(),
                            );
                        }
                        Ok::<_, Status>((seq, result, xdr))
                    }
                })
                .buffered(PIPELINE)
                .boxed();
            let mut last = None;
            loop {
                let item = tokio::select! {
                    _ = tx.closed() => return,
                    _ = p.shutdown.requested() => break,
                    item = processed.next() => item,
                };
                let (seq, result, xdr) = match item {
                    None => break,
                    Some(Ok(item)) => item,
                    Some(Err(status)) => {
                        tracing::error!(%status, "the ledger source cannot go on");
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                last = Some(seq);
                let changes = match result {
                    Ok((kept, _)) => kept,
                    Err(why) => {
                        p.metrics.error();
                        let reason = format!("ledger {seq}: {why}");
                        let Some(letters) = &p.dead_letters else {
                            tracing::error!(ledger = seq, error = %why, "a ledger that cannot be processed");
                            let status = Status::data_loss(format!(
                                "{reason} (on_error: dead-letter sets such ledgers aside)"
                            ));
                            let _ = tx.send(Err(status)).await;
                            return;
                        };
                        if let Err(e) = letters.report(seq, &reason, &xdr).await {
                            let _ = tx
                                .send(Err(Status::data_loss(format!("{reason}; {e}"))))
                                .await;
                            return;
                        }
                        tracing::warn!(ledger = seq, error = %why, "ledger set aside as a dead letter");
                        Vec::new()
                    }
                };
                let ledger = LedgerChanges {
                    ledger: seq,
                    changes,
                };
                if tx.send(Ok(ledger)).await.is_err() {
                    return;
                }
            }
            let complete = end.is_some_and(|e| last.is_some_and(|l| l >= e));
            if !complete {
                let stopping = Status::unavailable("contract-data-processor is stopping");
                let _ = tx.send(Err(stopping)).await;
            }
        });
        ReceiverStream::new(rx)
    }
}

#[tonic::async_trait]
impl ContractDataService for Processor {
    type GetContractDataStream =
        Pin<Box<dyn Stream<Item = Result<ChangeMessage, Status>> + Send + 'static>>;

    async fn get_contract_data(
        &self,
        request: Request<GetContractDataRequest>,
    ) -> Result<Response<Self::GetContractDataStream>, Status> {
        let req = request.into_inner();
        let end =
            (req.end_ledger != 0 && req.end_ledger >= req.start_ledger).then_some(req.end_ledger);
        let only: std::collections::HashSet<String> = req.contract_ids.into_iter().collect();
        tracing::info!(start = req.start_ledger, end = ?end, contracts = only.len(), "GetContractData");
        let session = self.metrics.session(false);
        let metrics = self.metrics.clone();
        let changes = self.ledgers(req.start_ledger, end).flat_map(move |item| {
            let _open: &Session = &session;
            let messages: Vec<Result<ChangeMessage, Status>> = match item {
                Ok(l) => l
                    .changes
                    .iter()
                    .filter(|c| only.is_empty() || only.contains(&c.contract_id))
                    .map(|c| Ok(super::proto::to_message(c)))
                    .collect(),
                Err(status) => vec![Err(status)],
            };
            let sent = messages.iter().filter(|m| m.is_ok()).count() as u64;
            metrics
                .grpc_records_streamed
                .fetch_add(sent, Ordering::Relaxed);
            futures::stream::iter(messages)
        });
        Ok(Response::new(Box::pin(changes)))
    }
}

#[tonic::async_trait]
impl RangeProducer for Processor {
    fn schema(&self) -> SchemaRef {
        batches::schema()
    }

    fn offered(&self) -> Option<LedgerTicket> {
        self.offered
    }

    async fn batches(&self, range: LedgerTicket) -> Result<Batches, Status> {
        let session = self.metrics.session(true);
        let metrics = self.metrics.clone();
        let (rows, wait) = (self.batch_rows.max(1), self.batch_wait);
        let mut ledgers = Box::pin(self.ledgers(range.start_ledger, range.end()));
        let (tx, rx) = mpsc::channel::<Result<(RecordBatch, u32), Status>>(2);
        tokio::spawn(async move {
            let _open = session;
            let mut pending: Vec<ContractDataChange> = Vec::new();
            let mut through = None;
            let mut since: Option<tokio::time::Instant> = None;
            let flush = |pending: &mut Vec<ContractDataChange>, through: u32| {
                let batch =
                    batches::to_batch(pending).map_err(|e| Status::internal(e.to_string()))?;
                metrics.batches_created.fetch_add(1, Ordering::Relaxed);
                metrics
                    .flight_records_streamed
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                pending.clear();
                Ok::<_, Status>((batch, through))
            };
            loop {
                // Rows (or progress) held back are sent at the latest `wait` after the first.
                let deadline = since.map(|s| s + wait);
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = ledgers.next() => Some(next),
                    _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await },
                        if deadline.is_some() => None,
                };
                let item = match next {
                    // The deadline passed: send what is held.
                    None => {
                        let batch = flush(&mut pending, through.expect("held since a ledger"));
                        since = None;
                        if tx.send(batch).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Some(item) => item,
                };
                match item {
                    Some(Ok(l)) => {
                        pending.extend(l.changes);
                        through = Some(l.ledger);
                        since.get_or_insert_with(tokio::time::Instant::now);
                        if pending.len() >= rows {
                            let batch = flush(&mut pending, l.ledger);
                            since = None;
                            if tx.send(batch).await.is_err() {
                                return;
                            }
                        }
                    }
                    // The end of a bounded range: what is held completes it.
                    None => {
                        if let (Some(t), Some(_)) = (through, since) {
                            let _ = tx.send(flush(&mut pending, t)).await;
                        }
                        return;
                    }
                    Some(Err(status)) => {
                        // What is complete goes first; the error ends the flight.
                        if let (Some(t), Some(_)) = (through, since) {
                            if tx.send(flush(&mut pending, t)).await.is_err() {
                                return;
                            }
                        }
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(ReceiverStream::new(rx).boxed())
    }
}
