//! `ttp-arrow-processor`'s flights: each `DoGet` reads the same range from the ledger
//! source's flight and serves its token-transfer events as batches of [`events::schema`]
//! rows, a batch for each batch of ledgers (never splitting a ledger).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use flowctl_proto::token_transfer::TokenTransferEvent;
use futures::StreamExt;
use stellar_ttp::EventsProcessor;
use tonic::transport::Endpoint;
use tonic::Status;

use super::service::process_raw;
use crate::arrow::events::{self, EventBatchBuilder};
use crate::arrow::flight::{Batches, FlightFeed, RangeProducer};
use crate::arrow::ledgers;
use crate::arrow::ticket::LedgerTicket;
use crate::backoff::Backoff;

/// Ledger batches processed at once: the two cores this runs on, and one more so the next
/// batch is read while they work.
const PIPELINE: usize = 3;

/// The seed's processor figures.
#[derive(Default, Debug)]
pub struct FlightMetrics {
    pub ledgers: AtomicU64,
    pub transactions: AtomicU64,
    pub events_extracted: AtomicU64,
    pub events_filtered: AtomicU64,
    pub batches: AtomicU64,
    pub errors: AtomicU64,
    pub current_ledger: AtomicU64,
    pub processing_us: AtomicU64,
}

impl FlightMetrics {
    pub fn snapshot(&self) -> flowctl_sdk::Metrics {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let ledgers = get(&self.ledgers);
        flowctl_sdk::Metrics::from([
            ("ledgers_processed_total".to_string(), ledgers),
            (
                "transactions_processed_total".to_string(),
                get(&self.transactions),
            ),
            (
                "events_extracted_total".to_string(),
                get(&self.events_extracted),
            ),
            (
                "events_filtered_total".to_string(),
                get(&self.events_filtered),
            ),
            ("batches_generated_total".to_string(), get(&self.batches)),
            ("processing_errors_total".to_string(), get(&self.errors)),
            ("current_ledger".to_string(), get(&self.current_ledger)),
            (
                "processing_latency_ms".to_string(),
                if ledgers > 0.0 {
                    get(&self.processing_us) / ledgers / 1000.0
                } else {
                    0.0
                },
            ),
        ])
    }
}

/// Which event types are kept (`EVENT_TYPES`); all when empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter(BTreeSet<String>);

impl EventFilter {
    /// A comma-separated list of `transfer, mint, burn, clawback, fee`; empty keeps all.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut kept = BTreeSet::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let word = word.to_ascii_lowercase();
            if !events::EVENT_TYPES.contains(&word.as_str()) {
                return Err(format!(
                    "EVENT_TYPES: {word:?} is not an event type (known: {})",
                    events::EVENT_TYPES.join(", ")
                ));
            }
            kept.insert(word);
        }
        Ok(EventFilter(kept))
    }

    pub fn keeps(&self, e: &TokenTransferEvent) -> bool {
        self.0.is_empty() || self.0.contains(event_type(e))
    }

    /// The list as the seed's `event_types` metadata writes it.
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            events::EVENT_TYPES.join(",")
        } else {
            self.0.iter().cloned().collect::<Vec<_>>().join(",")
        }
    }
}

fn event_type(e: &TokenTransferEvent) -> &'static str {
    use flowctl_proto::token_transfer::token_transfer_event::Event;
    match e.event {
        Some(Event::Transfer(_)) => "transfer",
        Some(Event::Mint(_)) => "mint",
        Some(Event::Burn(_)) => "burn",
        Some(Event::Clawback(_)) => "clawback",
        Some(Event::Fee(_)) => "fee",
        None => "",
    }
}

pub struct EventFlights {
    pub processor: Arc<EventsProcessor>,
    pub upstream: Endpoint,
    pub backoff: Backoff,
    pub filter: EventFilter,
    pub offered: Option<LedgerTicket>,
    pub metrics: Arc<FlightMetrics>,
    /// With `on_error: dead-letter`: ledgers that cannot be processed are recorded here and
    /// skipped; without, such a ledger ends the flight with DATA_LOSS naming it.
    pub dead_letters: Option<flowctl_sdk::DeadLetters>,
}

/// The events of one batch of ledgers, and the ledgers of it that could not be processed.
struct Processed {
    batch: RecordBatch,
    through: u32,
    failed: Vec<(u32, String, Vec<u8>)>,
}

fn process_batch(
    processor: &EventsProcessor,
    filter: &EventFilter,
    metrics: &FlightMetrics,
    batch: &RecordBatch,
    through: u32,
) -> Result<Processed, Status> {
    let rows = ledgers::rows(batch).map_err(Status::internal)?;
    let mut builder = EventBatchBuilder::new();
    let mut failed = Vec::new();
    let started = std::time::Instant::now();
    for (seq, xdr) in rows {
        // The source set this ledger aside (it recorded the dead letter): no events.
        if xdr.is_empty() {
            continue;
        }
        match process_raw(processor, xdr) {
            Ok(events) => {
                metrics.ledgers.fetch_add(1, Ordering::Relaxed);
                metrics
                    .current_ledger
                    .fetch_max(u64::from(seq), Ordering::Relaxed);
                metrics
                    .events_extracted
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                let before = builder.len();
                for e in events.iter().filter(|e| filter.keeps(e)) {
                    builder
                        .append(e)
                        .map_err(|err| Status::internal(err.to_string()))?;
                }
                let dropped = events.len() - (builder.len() - before);
                metrics
                    .events_filtered
                    .fetch_add(dropped as u64, Ordering::Relaxed);
            }
            Err(e) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                failed.push((seq, e, xdr.to_vec()));
            }
        }
    }
    metrics
        .processing_us
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    let batch = builder
        .finish()
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(Processed {
        batch,
        through,
        failed,
    })
}

#[tonic::async_trait]
impl RangeProducer for EventFlights {
    fn schema(&self) -> SchemaRef {
        events::schema()
    }

    fn offered(&self) -> Option<LedgerTicket> {
        self.offered
    }

    async fn batches(&self, range: LedgerTicket) -> Result<Batches, Status> {
        let mut feed = FlightFeed::new(
            self.upstream.clone(),
            range.start_ledger,
            range.end(),
            self.backoff,
        );
        let transactions = self.metrics.clone();
        let ledger_batches = async_stream(move |tx| async move {
            loop {
                match feed.next().await {
                    Ok(Some((batch, through))) => {
                        if let Some(c) = batch
                            .column_by_name("transaction_count")
                            .and_then(|c| c.as_any().downcast_ref::<arrow_array::UInt32Array>())
                        {
                            let n: u64 = c.values().iter().map(|v| u64::from(*v)).sum();
                            transactions.transactions.fetch_add(n, Ordering::Relaxed);
                        }
                        if tx.send(Ok((batch, through))).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        let (processor, filter, metrics) = (
            self.processor.clone(),
            self.filter.clone(),
            self.metrics.clone(),
        );
        let letters = self.dead_letters.clone();
        let processed = ledger_batches
            .map(move |item| {
                let (processor, filter, metrics) =
                    (processor.clone(), filter.clone(), metrics.clone());
                async move {
                    let (batch, through) = item?;
                    tokio::task::spawn_blocking(move || {
                        process_batch(&processor, &filter, &metrics, &batch, through)
                    })
                    .await
                    .map_err(|e| Status::internal(format!("processing task failed: {e}")))?
                }
            })
            .buffered(PIPELINE);
        let metrics = self.metrics.clone();
        let out = processed.then(move |item| {
            let (letters, metrics) = (letters.clone(), metrics.clone());
            async move {
                let p = item?;
                for (seq, why, xdr) in &p.failed {
                    let reason = format!("ledger {seq}: {why}");
                    let Some(letters) = &letters else {
                        return Err(Status::data_loss(format!(
                            "{reason} (on_error: dead-letter sets such ledgers aside)"
                        )));
                    };
                    letters
                        .report(*seq, &reason, xdr)
                        .await
                        .map_err(|e| Status::data_loss(format!("{reason}; {e}")))?;
                    tracing::warn!(ledger = seq, error = %why, "ledger set aside as a dead letter");
                }
                metrics.batches.fetch_add(1, Ordering::Relaxed);
                Ok((p.batch, p.through))
            }
        });
        Ok(out.boxed())
    }
}

/// A stream fed by a task through a channel, which reads ahead of the consumer by
/// [`PIPELINE`] items; once the stream is dropped the task stops at its next send.
fn async_stream<T, F, Fut>(f: F) -> impl futures::Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(PIPELINE);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
