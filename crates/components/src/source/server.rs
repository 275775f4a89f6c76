//! `RawLedgerService` over a [`Backend`]: streams follow the tip, and stop cleanly after
//! the configured end ledger. When the source is told to stop, every stream ends at once with
//! UNAVAILABLE, never with a clean end a consumer would take for the end of its range.

use std::sync::Arc;
use std::time::Duration;

use flowctl_proto::raw_ledger_service::raw_ledger_service_server::RawLedgerService;
use flowctl_proto::raw_ledger_service::{
    GetLedgerRangeRequest, GetLedgerRangeResponse, RawLedger, StreamLedgersRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::metrics::SourceMetrics;
use super::{Backend, SourceError};
use crate::shutdown::Shutdown;

/// Most ledgers one `GetLedgerRange` returns: a reply must stay well under gRPC's 4 MiB
/// default message limit on busy ledgers; callers page with a new start.
pub const MAX_RANGE: u32 = 64;

pub struct LedgerService {
    backend: Arc<Backend>,
    /// First ledger served when a request asks for 0.
    default_start: u32,
    /// Last ledger this source serves (END_LEDGER).
    end: Option<u32>,
    /// Wait at the tip before asking the backend again.
    poll: Duration,
    metrics: Arc<SourceMetrics>,
    shutdown: Shutdown,
}

impl LedgerService {
    pub fn new(
        backend: Arc<Backend>,
        default_start: u32,
        end: Option<u32>,
        poll: Duration,
        metrics: Arc<SourceMetrics>,
    ) -> Self {
        LedgerService {
            backend,
            default_start,
            end,
            poll,
            metrics,
            shutdown: Shutdown::never(),
        }
    }

    /// Streams end when `shutdown` fires.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The last ledger this source serves (END_LEDGER).
    pub fn end(&self) -> Option<u32> {
        self.end
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    pub fn metrics(&self) -> &Arc<SourceMetrics> {
        &self.metrics
    }

    /// Batches of consecutive ledgers from `start` to `end` (or on, following the tip), as
    /// the backend hands them out. The next batch is fetched while the previous one is being
    /// sent, so backend latency (object store, RPC, generation) overlaps with the consumer.
    /// The fetching stops when the receiver is dropped.
    pub fn fetch_ahead(
        &self,
        start: u32,
        end: Option<u32>,
    ) -> mpsc::Receiver<Result<Vec<RawLedger>, SourceError>> {
        let backend = self.backend.clone();
        let poll = self.poll;
        let (batches_tx, batches) = mpsc::channel::<Result<Vec<RawLedger>, SourceError>>(1);
        tokio::spawn(async move {
            let mut next = start;
            loop {
                let want = match end {
                    Some(end) if next > end => return,
                    Some(end) => backend.batch_size().min(end - next + 1),
                    None => backend.batch_size(),
                };
                let batch = tokio::select! {
                    b = backend.fetch(next, want) => b,
                    _ = batches_tx.closed() => return,
                };
                let batch = batch.and_then(|ledgers| {
                    for (i, l) in ledgers.iter().enumerate() {
                        if l.sequence != next + i as u32 {
                            return Err(SourceError::Order {
                                got: l.sequence,
                                due: next + i as u32,
                            });
                        }
                    }
                    Ok(ledgers)
                });
                match batch {
                    Ok(ledgers) if ledgers.is_empty() => {
                        tokio::select! {
                            _ = tokio::time::sleep(poll) => {}
                            _ = batches_tx.closed() => return,
                        }
                    }
                    Ok(ledgers) => {
                        next += ledgers.len() as u32;
                        if batches_tx.send(Ok(ledgers)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = batches_tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        batches
    }

    /// The first ledger of a request asking for `requested` (0: the source's default).
    pub async fn start_of(&self, requested: u32) -> Result<u32, Status> {
        if requested != 0 {
            return Ok(requested);
        }
        if self.default_start != 0 {
            return Ok(self.default_start);
        }
        match self.backend.latest().await.map_err(status)? {
            Some(latest) => Ok(latest),
            None => Err(Status::invalid_argument(
                "start_ledger is 0 and neither START_LEDGER nor the backend gives a start",
            )),
        }
    }
}

/// The gRPC status of a backend error.
pub fn status(e: SourceError) -> Status {
    match e {
        SourceError::Ledger { .. } => Status::out_of_range(e.to_string()),
        // Consumers must not retry forever what will never decode.
        SourceError::Unreadable { .. } => Status::data_loss(e.to_string()),
        SourceError::Order { .. } => Status::internal(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

#[tonic::async_trait]
impl RawLedgerService for LedgerService {
    type StreamRawLedgersStream = ReceiverStream<Result<RawLedger, Status>>;

    async fn stream_raw_ledgers(
        &self,
        request: Request<StreamLedgersRequest>,
    ) -> Result<Response<Self::StreamRawLedgersStream>, Status> {
        let start = self.start_of(request.into_inner().start_ledger).await?;
        if let Some(end) = self.end {
            if start > end {
                return Err(Status::out_of_range(format!(
                    "start_ledger {start} is after this source's END_LEDGER {end}"
                )));
            }
        }
        let (tx, rx) = mpsc::channel(64);
        let metrics = self.metrics.clone();
        let mut batches = self.fetch_ahead(start, self.end);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let forward = async {
                while let Some(batch) = batches.recv().await {
                    match batch {
                        Ok(ledgers) => {
                            for ledger in ledgers {
                                let seq = ledger.sequence;
                                if tx.send(Ok(ledger)).await.is_err() {
                                    return;
                                }
                                metrics.ledger_sent(seq);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "stream stopped");
                            let _ = tx.send(Err(status(e))).await;
                            return;
                        }
                    }
                }
            };
            let stopped = tokio::select! {
                _ = forward => false,
                _ = shutdown.requested() => true,
            };
            if stopped {
                // Stops the producer, whatever backend call it waits on.
                drop(batches);
                // Until this error is sent the stream stays open (a consumer that does not
                // read gets the process's end instead), so it never ends as if complete.
                let _ = tx
                    .send(Err(Status::unavailable("stellar-live-source is stopping")))
                    .await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_ledger_range(
        &self,
        request: Request<GetLedgerRangeRequest>,
    ) -> Result<Response<GetLedgerRangeResponse>, Status> {
        let req = request.into_inner();
        let start = self.start_of(req.start_ledger).await?;
        let mut end = req.end_ledger;
        if end <= start {
            return Err(Status::invalid_argument(format!(
                "end_ledger {end} must be after start_ledger {start} (the end is exclusive)"
            )));
        }
        if let Some(last) = self.end {
            end = end.min(last.saturating_add(1));
        }
        end = end.min(start.saturating_add(MAX_RANGE));
        let mut ledgers = Vec::new();
        let mut next = start;
        while next < end {
            let got = self.backend.fetch(next, end - next).await.map_err(status)?;
            if got.is_empty() {
                break;
            }
            next += got.len() as u32;
            ledgers.extend(got);
        }
        let latest = self.backend.latest().await.map_err(status)?;
        let latest_ledger = latest.unwrap_or(next.saturating_sub(1));
        Ok(Response::new(GetLedgerRangeResponse {
            ledgers,
            latest_ledger,
        }))
    }
}
