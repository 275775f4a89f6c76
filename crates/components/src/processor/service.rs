//! `token_transfer_service.EventService`: each `GetTTPEvents` call gets its own upstream
//! feed and its own processing task.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use flowctl_proto::token_transfer::TokenTransferEvent;
use flowctl_proto::token_transfer_service::{event_service_server::EventService, GetEventsRequest};
use futures::{Stream, StreamExt};
use stellar_ttp::EventsProcessor;
use stellar_xdr::{LedgerCloseMeta, Limits, ReadXdr};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};

use super::metrics::Metrics;
use super::readiness::Readiness;
use super::upstream::{Backoff, LedgerFeed};
use crate::shutdown::Shutdown;

/// Ledgers in processing at once for one stream. More than the cores: a ledger's cost varies,
/// and on a host the source and sink share, the stage with the most work should also have
/// the most runnable threads (`benches/e2e.sh`: 8 moves about 4 % more ledgers than 4).
const PIPELINE: usize = 8;

/// Processed ledgers waiting for the network, per stream. A ledger's events travel together
/// so the hand-over costs once a ledger, not once an event.
const PROCESSED_BUFFER: usize = 32;

/// Aborts the task when dropped: the reader of a stream whose consumer is gone.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Clone)]
pub struct TtpService {
    pub processor: Arc<EventsProcessor>,
    pub upstream: Endpoint,
    pub backoff: Backoff,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    /// When it fires, streams stop reading upstream, send the ledgers already processed and
    /// end with UNAVAILABLE.
    pub shutdown: Shutdown,
    /// With `on_error: dead-letter`: ledgers that cannot be processed are recorded here.
    pub dead_letters: Option<flowctl_sdk::DeadLetters>,
}

/// The inclusive end of a request, or `None` for a live stream (0 or below the start).
pub fn bounded_end(req: &GetEventsRequest) -> Option<u32> {
    (req.end_ledger != 0 && req.end_ledger >= req.start_ledger).then_some(req.end_ledger)
}

/// Decodes and processes one raw ledger.
pub fn process_raw(
    processor: &EventsProcessor,
    xdr: &[u8],
) -> Result<Vec<TokenTransferEvent>, String> {
    let limits = Limits {
        depth: 500,
        len: xdr.len(),
    };
    let lcm = LedgerCloseMeta::from_xdr(xdr, limits)
        .map_err(|e| format!("not a valid LedgerCloseMeta: {e}"))?;
    processor
        .events_from_ledger(&lcm)
        .map_err(|e| e.to_string())
}

#[tonic::async_trait]
impl EventService for TtpService {
    type GetTTPEventsStream =
        Pin<Box<dyn Stream<Item = Result<TokenTransferEvent, Status>> + Send + 'static>>;

    async fn get_ttp_events(
        &self,
        request: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetTTPEventsStream>, Status> {
        let req = request.into_inner();
        let end = bounded_end(&req);
        tracing::info!(start = req.start_ledger, end = ?end, "GetTTPEvents");
        let (tx, rx) = mpsc::channel::<Result<Vec<TokenTransferEvent>, Status>>(PROCESSED_BUFFER);
        let svc = self.clone();
        let mut feed = LedgerFeed::new(
            svc.upstream.clone(),
            req.start_ledger,
            svc.backoff,
            svc.readiness.clone(),
        );
        // Up to PIPELINE ledgers are decoded and processed at once on blocking threads while
        // the events of earlier ones are sent, in ledger order: the stream's order is kept
        // and a free core is not left idle waiting for the network.
        let (jobs_tx, mut jobs) = mpsc::channel(PIPELINE);
        let producer = svc.clone();
        let shutdown = svc.shutdown.clone();
        // Why the reader stopped early, when the source cannot go on: the stream's last word.
        let fatal = Arc::new(std::sync::Mutex::new(None::<Status>));
        let reader_fatal = fatal.clone();
        let reader = tokio::spawn(async move {
            loop {
                let raw = tokio::select! {
                    _ = jobs_tx.closed() => return,
                    _ = shutdown.requested() => return,
                    raw = feed.next() => raw,
                };
                let raw = match raw {
                    Ok(raw) => raw,
                    Err(status) => {
                        tracing::error!(%status, "the ledger source cannot go on");
                        *reader_fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
                        return;
                    }
                };
                let seq = raw.sequence;
                if end.is_some_and(|e| seq > e) {
                    return;
                }
                let processor = producer.processor.clone();
                let started = Instant::now();
                let xdr = raw.ledger_close_meta_xdr;
                // The source set this ledger aside (it recorded the dead letter): it has no
                // events, and it is not a gap.
                let set_aside = xdr.is_empty();
                let job = tokio::task::spawn_blocking(move || match set_aside {
                    true => Ok(Vec::new()),
                    false => process_raw(&processor, &xdr).map_err(|e| (e, xdr)),
                });
                if jobs_tx.send((seq, started, job)).await.is_err() {
                    return;
                }
                if end.is_some_and(|e| seq >= e) {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            // Dropping the receiver (below, on return) stops the reader.
            let _reader = AbortOnDrop(reader);
            let mut last = None;
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = jobs.recv() => next,
                };
                let Some((seq, started, job)) = next else {
                    let fatal = fatal.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(status) = fatal {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    // The reader is done: at the end of a bounded range the stream ends
                    // cleanly; stopped before it, it must not look complete.
                    let complete = end.is_some_and(|e| last.is_some_and(|l| l >= e));
                    if !complete {
                        let stopping = Status::unavailable("ttp-processor is stopping");
                        let _ = tx.send(Err(stopping)).await;
                    }
                    return;
                };
                last = Some(seq);
                let result = job.await.unwrap_or_else(|e| {
                    Err((format!("processing task failed: {e}"), Default::default()))
                });
                match result {
                    Ok(events) => {
                        svc.metrics
                            .record_success(seq, events.len(), started.elapsed());
                        if tx.send(Ok(events)).await.is_err() {
                            return;
                        }
                    }
                    Err((e, xdr)) => {
                        svc.metrics.record_error();
                        let Some(letters) = &svc.dead_letters else {
                            tracing::error!(ledger = seq, error = %e, "skipping a ledger that cannot be processed");
                            continue;
                        };
                        let reason = format!("ledger {seq}: {e}");
                        if let Err(report) = letters.report(seq, &reason, &xdr).await {
                            // Not recorded: the stream must not go on as if it were.
                            let status = Status::data_loss(format!("{reason}; {report}"));
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                        tracing::warn!(ledger = seq, error = %e, "ledger set aside as a dead letter");
                    }
                }
            }
        });
        let events = ReceiverStream::new(rx).flat_map(|batch| match batch {
            Ok(events) => futures::stream::iter(events.into_iter().map(Ok)).left_stream(),
            Err(status) => futures::stream::once(async { Err(status) }).right_stream(),
        });
        Ok(Response::new(Box::pin(events)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_zero_or_below_start_means_live() {
        let r = |start_ledger, end_ledger| GetEventsRequest {
            start_ledger,
            end_ledger,
        };
        assert_eq!(bounded_end(&r(10, 0)), None);
        assert_eq!(bounded_end(&r(10, 9)), None);
        assert_eq!(bounded_end(&r(10, 10)), Some(10));
        assert_eq!(bounded_end(&r(10, 20)), Some(20));
    }

    #[test]
    fn garbage_ledger_bytes_are_an_error_not_a_panic() {
        let p = EventsProcessor::new("Test SDF Network ; September 2015");
        assert!(process_raw(&p, &[0, 0, 0, 7, 1, 2]).is_err());
        assert!(process_raw(&p, &[]).is_err());
    }
}
