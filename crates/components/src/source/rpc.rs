//! The Stellar RPC backend: `getLedgers` pages (base64 `metadataXdr`), retries with
//! backoff on transport errors, and an empty answer at the tip so the stream waits.

use std::time::Duration;

use base64::Engine;
use flowctl_proto::raw_ledger_service::RawLedger;
use serde::Deserialize;
use serde_json::json;

use super::SourceError;

/// Ledgers per `getLedgers` page (the RPC's own maximum is 200; busy ledgers are large).
pub const PAGE_LIMIT: u32 = 50;
const ATTEMPTS: u32 = 6;

pub struct RpcClient {
    endpoint: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct RpcResponse<T> {
    result: Option<T>,
    error: Option<RpcError>,
}

#[derive(Deserialize, Debug)]
struct RpcError {
    code: i64,
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LedgersPage {
    ledgers: Vec<LedgerInfo>,
    latest_ledger: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LedgerInfo {
    sequence: u32,
    metadata_xdr: String,
}

#[derive(Deserialize)]
struct LatestLedger {
    sequence: u32,
}

enum CallError {
    /// Worth another attempt: the connection failed, or the server is busy or broken.
    Transient(String),
    /// The server answered with a JSON-RPC error.
    Rpc(RpcError),
    Fatal(String),
}

impl RpcClient {
    pub fn new(endpoint: &str) -> Result<Self, SourceError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| SourceError::Rpc {
                endpoint: endpoint.to_string(),
                message: format!("HTTP client setup: {e}"),
            })?;
        Ok(RpcClient {
            endpoint: endpoint.to_string(),
            http,
        })
    }

    fn err(&self, message: String) -> SourceError {
        SourceError::Rpc {
            endpoint: self.endpoint.clone(),
            message,
        }
    }

    async fn call_once<T: for<'de> Deserialize<'de>>(
        &self,
        method: &str,
        params: &serde_json::Value,
    ) -> Result<T, CallError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp = self
            .http
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| CallError::Transient(format!("{method}: {e}")))?;
        let status = resp.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(CallError::Transient(format!("{method}: HTTP {status}")));
        }
        if !status.is_success() {
            return Err(CallError::Fatal(format!("{method}: HTTP {status}")));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CallError::Transient(format!("{method}: reading the body: {e}")))?;
        let parsed: RpcResponse<T> = serde_json::from_slice(&bytes)
            .map_err(|e| CallError::Fatal(format!("{method}: not a JSON-RPC reply: {e}")))?;
        match (parsed.result, parsed.error) {
            (_, Some(e)) => Err(CallError::Rpc(e)),
            (Some(r), None) => Ok(r),
            (None, None) => Err(CallError::Fatal(format!("{method}: reply has no result"))),
        }
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<Result<T, RpcError>, SourceError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self.call_once(method, &params).await {
                Ok(r) => return Ok(Ok(r)),
                Err(CallError::Rpc(e)) => return Ok(Err(e)),
                Err(CallError::Fatal(m)) => return Err(self.err(m)),
                Err(CallError::Transient(m)) if attempt < ATTEMPTS => {
                    tracing::warn!(endpoint = %self.endpoint, attempt, error = %m, "retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                    attempt += 1;
                }
                Err(CallError::Transient(m)) => {
                    return Err(self.err(format!("{m} (after {ATTEMPTS} attempts)")))
                }
            }
        }
    }

    pub async fn latest(&self) -> Result<u32, SourceError> {
        match self
            .call::<LatestLedger>("getLatestLedger", json!({}))
            .await?
        {
            Ok(l) => Ok(l.sequence),
            Err(e) => Err(self.err(format!("getLatestLedger: {} ({})", e.message, e.code))),
        }
    }

    pub async fn fetch(&self, from: u32, max: u32) -> Result<Vec<RawLedger>, SourceError> {
        let params = json!({
            "startLedger": from,
            "pagination": {"limit": max.clamp(1, PAGE_LIMIT)},
        });
        let page = match self.call::<LedgersPage>("getLedgers", params).await? {
            Ok(page) => page,
            Err(e) => {
                // Asking past the tip is an "invalid params" error; anything else is real.
                let latest = self.latest().await?;
                if from > latest {
                    return Ok(Vec::new());
                }
                return Err(self.err(format!(
                    "getLedgers from {from}: {} ({}); latest ledger is {latest}",
                    e.message, e.code
                )));
            }
        };
        let _ = page.latest_ledger;
        let mut out = Vec::with_capacity(page.ledgers.len());
        let mut continuity = stellar_ledgers::Continuity::starting_at(from);
        for l in page.ledgers {
            match continuity.check(l.sequence) {
                Ok(stellar_ledgers::Step::Deliver) => {}
                Ok(stellar_ledgers::Step::Repeat) => continue,
                // Serve the ledgers before the gap; the next call, from the gap, reports it.
                Err(_) if !out.is_empty() => break,
                Err(gap) => {
                    return Err(self.err(format!("getLedgers from {from}: {gap}")));
                }
            }
            let xdr = base64::engine::general_purpose::STANDARD
                .decode(l.metadata_xdr.as_bytes())
                .map_err(|e| SourceError::Ledger {
                    seq: l.sequence,
                    message: format!("metadataXdr is not base64: {e}"),
                })?;
            out.push(RawLedger {
                sequence: l.sequence,
                ledger_close_meta_xdr: xdr.into(),
            });
            if out.len() as u32 >= max {
                break;
            }
        }
        Ok(out)
    }
}
