//! The ledger source's Arrow Flight face (`stellar-arrow-source`): the same backends and the
//! same fetching as `RawLedgerService`, served as batches of [`ledgers::schema`] rows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_schema::SchemaRef;
use futures::StreamExt;
use tonic::Status;

use super::server::{status, LedgerService};
use crate::arrow::flight::{Batches, RangeProducer};
use crate::arrow::ledgers::{self, LedgerBatchBuilder};
use crate::arrow::ticket::LedgerTicket;

/// A batch is sent at this many bytes of XDR even when it has fewer than `batch_size`
/// ledgers, so one message stays a few MiB.
pub const MAX_BATCH_BYTES: usize = 16 << 20;

pub struct LedgerFlights {
    ledgers: Arc<LedgerService>,
    /// The range `ListFlights` offers: the configured START_LEDGER to END_LEDGER.
    offered: Option<LedgerTicket>,
    /// Most ledgers in one batch (BATCH_SIZE).
    batch_size: usize,
    pub batches_sent: Arc<AtomicU64>,
    pub bytes_sent: Arc<AtomicU64>,
}

impl LedgerFlights {
    pub fn new(
        ledgers: Arc<LedgerService>,
        offered: Option<LedgerTicket>,
        batch_size: usize,
    ) -> Self {
        LedgerFlights {
            ledgers,
            offered,
            batch_size: batch_size.max(1),
            batches_sent: Arc::default(),
            bytes_sent: Arc::default(),
        }
    }
}

#[tonic::async_trait]
impl RangeProducer for LedgerFlights {
    fn schema(&self) -> SchemaRef {
        ledgers::schema()
    }

    fn offered(&self) -> Option<LedgerTicket> {
        self.offered
    }

    async fn batches(&self, range: LedgerTicket) -> Result<Batches, Status> {
        let start = range.start_ledger;
        let end = match (range.end(), self.ledgers.end()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(last) = self.ledgers.end() {
            if start > last {
                return Err(Status::out_of_range(format!(
                    "start_ledger {start} is after this source's END_LEDGER {last}"
                )));
            }
        }
        let mut fetched = self.ledgers.fetch_ahead(start, end);
        let metrics = self.ledgers.metrics().clone();
        let shutdown = self.ledgers.shutdown().clone();
        let (batch_size, batches_sent, bytes_sent) = (
            self.batch_size,
            self.batches_sent.clone(),
            self.bytes_sent.clone(),
        );
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<_, Status>>(2);
        tokio::spawn(async move {
            let mut builder = LedgerBatchBuilder::default();
            let mut queue = std::collections::VecDeque::new();
            let mut ended = false;
            while !(ended && queue.is_empty()) {
                if queue.is_empty() {
                    // Wait for ledgers; at the tip a batch goes out with the ledger that
                    // just closed.
                    let got = tokio::select! {
                        got = fetched.recv() => got,
                        _ = shutdown.requested() => {
                            let _ = tx.send(Err(Status::unavailable("stellar-arrow-source is stopping"))).await;
                            return;
                        }
                    };
                    match got {
                        Some(Ok(ledgers)) => queue.extend(ledgers),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "flight stopped");
                            let _ = tx.send(Err(status(e))).await;
                            return;
                        }
                        None => ended = true,
                    }
                }
                let mut last = 0;
                while builder.len() < batch_size && builder.bytes() < MAX_BATCH_BYTES {
                    if queue.is_empty() {
                        // Take what is already fetched, without waiting for more.
                        match fetched.try_recv() {
                            Ok(Ok(ledgers)) => queue.extend(ledgers),
                            Ok(Err(e)) => {
                                let _ = tx.send(Err(status(e))).await;
                                return;
                            }
                            Err(_) => break,
                        }
                    }
                    let Some(l) = queue.pop_front() else { break };
                    if let Err(e) = builder.append(&l) {
                        let _ = tx.send(Err(Status::data_loss(e))).await;
                        return;
                    }
                    metrics.ledger_sent(l.sequence);
                    last = l.sequence;
                }
                if builder.is_empty() {
                    continue;
                }
                let bytes = builder.bytes() as u64;
                let batch = match builder.finish() {
                    Ok(batch) => batch,
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                };
                if tx.send(Ok((batch, last))).await.is_err() {
                    return;
                }
                batches_sent.fetch_add(1, Ordering::Relaxed);
                bytes_sent.fetch_add(bytes, Ordering::Relaxed);
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }
}
