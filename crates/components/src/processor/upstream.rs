//! A gap-free, duplicate-free ledger feed over `RawLedgerService/StreamRawLedgers` that
//! survives the source going away: it reconnects with backoff and asks again from the
//! ledger after the last one it delivered.

use std::time::Duration;

use flowctl_proto::raw_ledger_service::{
    raw_ledger_service_client::RawLedgerServiceClient, RawLedger, StreamLedgersRequest,
};
use stellar_ledgers::{Continuity, Step};
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

use super::readiness::Readiness;
pub use crate::backoff::Backoff;

pub struct LedgerFeed {
    endpoint: Endpoint,
    /// The next sequence to ask for; 0 lets the source choose (live).
    next: u32,
    stream: Option<Streaming<RawLedger>>,
    backoff: Backoff,
    readiness: Readiness,
}

impl LedgerFeed {
    pub fn new(endpoint: Endpoint, start: u32, backoff: Backoff, readiness: Readiness) -> Self {
        LedgerFeed {
            endpoint,
            next: start,
            stream: None,
            backoff,
            readiness,
        }
    }

    /// The next ledger in sequence. Waits (reconnecting as needed) until there is one;
    /// ledgers the source repeats after a reconnect are dropped, and one past the expected
    /// ledger is refused. A ledger the source says it cannot read (DATA_LOSS) is an error:
    /// asking again would not help.
    pub async fn next(&mut self) -> Result<RawLedger, tonic::Status> {
        loop {
            let stream = match &mut self.stream {
                Some(s) => s,
                None => {
                    let s = self.connect().await;
                    self.stream.insert(s)
                }
            };
            match stream.message().await {
                Ok(Some(ledger)) => {
                    if self.next != 0 {
                        match Continuity::starting_at(self.next).check(ledger.sequence) {
                            Ok(Step::Deliver) => {}
                            Ok(Step::Repeat) => continue,
                            // Never skip a ledger: ask again from the one that is missing.
                            Err(gap) => {
                                tracing::error!(
                                    upstream = %self.endpoint.uri(),
                                    error = %gap,
                                    "the ledger source skipped ledgers; reconnecting"
                                );
                                self.lost().await;
                                continue;
                            }
                        }
                    }
                    self.next = ledger.sequence.saturating_add(1);
                    self.backoff.reset();
                    return Ok(ledger);
                }
                Ok(None) => {
                    tracing::warn!(
                        next = self.next,
                        "the ledger source ended its stream; reconnecting"
                    );
                    self.lost().await;
                }
                Err(status) if status.code() == tonic::Code::DataLoss => return Err(status),
                Err(status) => {
                    tracing::warn!(next = self.next, %status, "lost the ledger source; reconnecting");
                    self.lost().await;
                }
            }
        }
    }

    async fn lost(&mut self) {
        self.stream = None;
        self.readiness.set(false).await;
        tokio::time::sleep(self.backoff.next_delay()).await;
    }

    async fn connect(&mut self) -> Streaming<RawLedger> {
        loop {
            match self.try_connect().await {
                Ok(s) => {
                    self.readiness.set(true).await;
                    return s;
                }
                Err(e) => {
                    self.readiness.set(false).await;
                    let wait = self.backoff.next_delay();
                    tracing::warn!(
                        upstream = %self.endpoint.uri(),
                        start = self.next,
                        error = %e,
                        retry_in_ms = wait.as_millis() as u64,
                        "cannot reach the ledger source"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn try_connect(&self) -> Result<Streaming<RawLedger>, String> {
        let channel: Channel = self.endpoint.connect().await.map_err(|e| e.to_string())?;
        let mut client =
            RawLedgerServiceClient::new(channel).max_decoding_message_size(256 * 1024 * 1024);
        let resp = client
            .stream_raw_ledgers(StreamLedgersRequest {
                start_ledger: self.next,
            })
            .await
            .map_err(|s| s.to_string())?;
        Ok(resp.into_inner())
    }
}

/// Keeps readiness current while no consumer is streaming: checks every `every` that the
/// source accepts connections.
pub async fn watch_source(endpoint: Endpoint, readiness: Readiness, every: Duration) {
    loop {
        let ok = tokio::time::timeout(every, endpoint.connect())
            .await
            .is_ok_and(|r| r.is_ok());
        readiness.set(ok).await;
        tokio::time::sleep(every).await;
    }
}
