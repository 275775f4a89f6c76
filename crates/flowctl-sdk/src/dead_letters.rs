//! Dead letters: a component that cannot handle a ledger (or an event of it) records it with
//! the control plane's `flowctl.v1.DeadLetterService` and goes on, when its spec says
//! `on_error: dead-letter` (`FLOWCTL_ON_ERROR`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use flowctl_sdk::{Config, DeadLetters, OnError};
//! let config = Config::from_env("TTP_PROCESSOR")?;
//! let letters = DeadLetters::new(&config);
//! if OnError::from_env("TTP_PROCESSOR")? == OnError::DeadLetter {
//!     letters.report(998, "not a valid LedgerCloseMeta", b"...").await?;
//! }
//! // `letters.total()` is the component's `dead_letters_total`.
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flowctl_proto::flowctl::v1::dead_letter_service_client::DeadLetterServiceClient;
use flowctl_proto::flowctl::v1::ReportDeadLetterRequest;
use tonic::service::interceptor::InterceptedService;

use crate::control::{channel, Authed, Token};
use crate::env::{Config, ConfigError};

/// The largest payload sent; the rest is cut and the letter says so.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// What a component does with a ledger it cannot handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop with an error naming the ledger (the default).
    #[default]
    Fail,
    /// Record a dead letter and go on with the next ledger.
    DeadLetter,
}

impl OnError {
    /// `FLOWCTL_ON_ERROR` (`fail` or `dead-letter`), the prefixed variable winning.
    pub fn from_env(prefix: &str) -> Result<OnError, ConfigError> {
        Self::from_lookup(prefix, |k| std::env::var(k).ok())
    }

    pub fn from_lookup(
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<OnError, ConfigError> {
        let prefixed = format!("{prefix}_FLOWCTL_ON_ERROR");
        let found = (!prefix.is_empty())
            .then(|| lookup(&prefixed).map(|v| (prefixed.clone(), v)))
            .flatten()
            .or_else(|| lookup("FLOWCTL_ON_ERROR").map(|v| ("FLOWCTL_ON_ERROR".into(), v)));
        match found {
            None => Ok(OnError::Fail),
            Some((var, value)) => match value.trim() {
                "" | "fail" => Ok(OnError::Fail),
                "dead-letter" => Ok(OnError::DeadLetter),
                _ => Err(ConfigError {
                    var,
                    value,
                    expected: "fail or dead-letter",
                }),
            },
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReportError {
    #[error("cannot record a dead letter: the control plane is disabled (ENABLE_FLOWCTL=false)")]
    Disabled,
    #[error("cannot record a dead letter: bad FLOWCTL_ENDPOINT: {0}")]
    Endpoint(String),
    #[error("cannot record a dead letter: FLOWCTL_TOKEN is not a valid header value")]
    Token,
    #[error("cannot record a dead letter: {}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
}

/// A client of `DeadLetterService` at `FLOWCTL_ENDPOINT`, counting what it recorded.
/// Cheap to clone; clones share the count.
#[derive(Clone)]
pub struct DeadLetters {
    /// The client, or why there is none (a [`ReportError`]'s text).
    client: Result<DeadLetterServiceClient<Authed>, ReportError>,
    total: Arc<AtomicU64>,
    /// Empty: the registry fills in the supervised caller's own.
    pipeline: String,
    component: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("total", &self.total())
            .finish()
    }
}

impl DeadLetters {
    /// Connects lazily: creating it never waits for the control plane.
    pub fn new(config: &Config) -> DeadLetters {
        DeadLetters {
            client: Self::client(config),
            total: Arc::new(AtomicU64::new(0)),
            pipeline: String::new(),
            component: config.component_id.clone().unwrap_or_default(),
        }
    }

    /// Names the pipeline, for a registry that did not start this process (a standalone
    /// `flowctl server`); under a supervisor the registry knows it.
    pub fn for_pipeline(mut self, pipeline: impl Into<String>) -> Self {
        self.pipeline = pipeline.into();
        self
    }

    fn client(config: &Config) -> Result<DeadLetterServiceClient<Authed>, ReportError> {
        if !config.enabled {
            return Err(ReportError::Disabled);
        }
        let channel = channel(&config.endpoint).map_err(ReportError::Endpoint)?;
        let token = match config
            .token
            .as_deref()
            .map(|t| format!("Bearer {t}").parse())
        {
            Some(Err(_)) => return Err(ReportError::Token),
            other => Token(other.and_then(Result::ok)),
        };
        Ok(DeadLetterServiceClient::new(InterceptedService::new(
            channel, token,
        )))
    }

    /// Letters recorded so far: the `dead_letters_total` metric.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Records that `ledger` could not be handled, as `FLOWCTL_COMPONENT_ID` of the caller's
    /// pipeline (which the registry knows for a process it supervises); the payload is cut
    /// to [`MAX_PAYLOAD_BYTES`]. An error means nothing was recorded: the caller must then
    /// fail rather than drop the ledger.
    pub async fn report(
        &self,
        ledger: u32,
        reason: &str,
        payload: &[u8],
    ) -> Result<(), ReportError> {
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(e.clone()),
        };
        let truncated = payload.len() > MAX_PAYLOAD_BYTES;
        let request = ReportDeadLetterRequest {
            pipeline: self.pipeline.clone(),
            component: self.component.clone(),
            ledger,
            reason: reason.to_string(),
            payload: payload[..payload.len().min(MAX_PAYLOAD_BYTES)].to_vec(),
            payload_truncated: truncated,
            payload_size: payload.len() as u64,
            ..Default::default()
        };
        // A few tries: a lazily connected channel may meet a registry still starting.
        let mut last = None;
        for _ in 0..3 {
            match client.report(request.clone()).await {
                Ok(_) => {
                    self.total.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    last = Some(status);
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(status) => return Err(ReportError::Refused(status)),
            }
        }
        Err(ReportError::Refused(last.expect("an attempt was made")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn on_error(vars: &[(&str, &str)]) -> Result<OnError, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OnError::from_lookup("TTP", |k| map.get(k).cloned())
    }

    #[test]
    fn on_error_defaults_to_fail_and_the_prefixed_variable_wins() {
        assert_eq!(on_error(&[]).unwrap(), OnError::Fail);
        assert_eq!(
            on_error(&[("FLOWCTL_ON_ERROR", "dead-letter")]).unwrap(),
            OnError::DeadLetter
        );
        assert_eq!(
            on_error(&[
                ("FLOWCTL_ON_ERROR", "dead-letter"),
                ("TTP_FLOWCTL_ON_ERROR", "fail")
            ])
            .unwrap(),
            OnError::Fail
        );
        let err = on_error(&[("FLOWCTL_ON_ERROR", "skip")]).unwrap_err();
        assert!(err.to_string().contains("FLOWCTL_ON_ERROR"), "{err}");
        assert!(err.to_string().contains("dead-letter"), "{err}");
    }

    #[tokio::test]
    async fn without_a_control_plane_nothing_is_recorded_and_the_caller_is_told() {
        let config =
            Config::from_lookup("", |k| (k == "ENABLE_FLOWCTL").then(|| "false".to_string()))
                .unwrap();
        let letters = DeadLetters::new(&config);
        let err = letters.report(1, "x", b"").await.unwrap_err();
        assert!(matches!(err, ReportError::Disabled), "{err}");
        assert_eq!(letters.total(), 0);
    }
}
