//! The settings of the ledger source's backends, shared by `stellar-live-source` and
//! `stellar-arrow-source`: which backend, where it is, and the range served.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use super::{datalake, rpc, synthetic, Backend};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum BackendKind {
    Datalake,
    Rpc,
    Synthetic,
}

#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    /// Where ledgers come from; by default datalake when DATALAKE_URL is set, rpc when
    /// RPC_ENDPOINT is set, synthetic otherwise.
    #[arg(long, env = "BACKEND", value_enum, ignore_case = true)]
    pub backend: Option<BackendKind>,
    /// Data lake root: a local path, file://, s3://bucket/prefix or gs://bucket/prefix.
    #[arg(long, env = "DATALAKE_URL")]
    pub datalake_url: Option<String>,
    /// The object store's service URL for an s3:// or gs:// lake that is not on AWS or Google
    /// (S3-compatible storage, an emulator, a mirror); `http://` is allowed. Defaults to the
    /// stores' own variables (`AWS_ENDPOINT_URL`, `GOOGLE_BASE_URL`), else the public cloud.
    #[arg(long, env = "DATALAKE_ENDPOINT")]
    pub datalake_endpoint: Option<String>,
    /// Stellar RPC URL (JSON-RPC `getLedgers`).
    #[arg(long, env = "RPC_ENDPOINT")]
    pub rpc_endpoint: Option<String>,
    #[arg(long, env = "NETWORK_PASSPHRASE", default_value = stellar_synth::DEFAULT_PASSPHRASE)]
    pub network_passphrase: String,
    /// First ledger served when a client asks for 0; first synthetic ledger.
    #[arg(long, env = "START_LEDGER", default_value_t = 0)]
    pub start_ledger: u32,
    /// Last ledger served (inclusive); streams end cleanly after it. 0 = no end.
    #[arg(long, env = "END_LEDGER", default_value_t = 0)]
    pub end_ledger: u32,
    /// Synthetic ledgers per second; 0 = as fast as the consumer reads.
    #[arg(long, env = "SYNTHETIC_RATE", default_value_t = 0.0)]
    pub synthetic_rate: f64,
    #[arg(long, env = "SYNTHETIC_SEED", default_value_t = 1)]
    pub synthetic_seed: u64,
    #[arg(long, env = "SYNTHETIC_TXS_PER_LEDGER", default_value_t = 50)]
    pub synthetic_txs_per_ledger: u32,
    /// 23+ gives LCM V2 / TransactionMeta V4; 20–22 LCM V1 / TransactionMeta V3.
    #[arg(long, env = "SYNTHETIC_PROTOCOL", default_value_t = 23)]
    pub synthetic_protocol: u32,
    /// Data-lake objects fetched concurrently ahead of the consumer.
    #[arg(long, env = "DATALAKE_PREFETCH", default_value_t = datalake::DEFAULT_PREFETCH)]
    pub datalake_prefetch: usize,
    /// Wait at the tip before asking the backend again.
    #[arg(long, env = "POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
}

impl BackendArgs {
    /// The backend asked for; by default datalake when DATALAKE_URL is set, rpc when
    /// RPC_ENDPOINT is set, synthetic otherwise.
    pub fn kind(&self) -> BackendKind {
        self.backend.unwrap_or(if self.datalake_url.is_some() {
            BackendKind::Datalake
        } else if self.rpc_endpoint.is_some() {
            BackendKind::Rpc
        } else {
            BackendKind::Synthetic
        })
    }

    /// The last ledger served, when END_LEDGER sets one.
    pub fn end(&self) -> Option<u32> {
        (self.end_ledger != 0).then_some(self.end_ledger)
    }

    /// The first ledger served to a request asking for 0.
    pub fn default_start(&self) -> u32 {
        match self.kind() {
            BackendKind::Synthetic => self.start_ledger.max(2),
            _ => self.start_ledger,
        }
    }

    /// The backend `kind` names, set up from `args` (a data lake's manifest is read here).
    /// With `on_error: dead-letter`, a data-lake object that does not decode is recorded in
    /// `letters` and skipped; otherwise it ends the stream.
    pub async fn open(&self, letters: Option<flowctl_sdk::DeadLetters>) -> anyhow::Result<Backend> {
        let args = self;
        Ok(match self.kind() {
            BackendKind::Datalake => {
                let Some(url) = &args.datalake_url else {
                    bail!(
                        "BACKEND=datalake needs DATALAKE_URL (a path, file://, s3:// or gs:// URL)"
                    );
                };
                let lake = datalake::DataLake::open(
                    url,
                    args.datalake_endpoint.as_deref(),
                    args.datalake_prefetch,
                )
                .await?;
                if lake.manifest().network_passphrase != args.network_passphrase {
                    tracing::warn!(
                        lake = %lake.manifest().network_passphrase,
                        configured = %args.network_passphrase,
                        "the data lake's network passphrase differs from NETWORK_PASSPHRASE"
                    );
                }
                match letters {
                    Some(letters) => Backend::DataLake(lake.with_dead_letters(letters)),
                    None => Backend::DataLake(lake),
                }
            }
            BackendKind::Rpc => {
                let Some(url) = &args.rpc_endpoint else {
                    bail!("BACKEND=rpc needs RPC_ENDPOINT (a Stellar RPC URL)");
                };
                Backend::Rpc(rpc::RpcClient::new(url)?)
            }
            BackendKind::Synthetic => {
                if args.synthetic_rate < 0.0 || !args.synthetic_rate.is_finite() {
                    bail!(
                        "SYNTHETIC_RATE {} must be 0 or a positive number",
                        args.synthetic_rate
                    );
                }
                let cfg = stellar_synth::Config {
                    network_passphrase: args.network_passphrase.clone(),
                    seed: args.synthetic_seed,
                    // 0 asks for the default; 1 (genesis) is refused by the generator, naming it.
                    first_ledger: if args.start_ledger == 0 {
                        2
                    } else {
                        args.start_ledger
                    },
                    protocol_version: args.synthetic_protocol,
                    txs_per_ledger: args.synthetic_txs_per_ledger,
                    ..stellar_synth::Config::default()
                };
                Backend::Synthetic(
                    synthetic::Synthetic::new(cfg, args.synthetic_rate)
                        .context("START_LEDGER and SYNTHETIC_* settings")?
                        .closing_from(args.start_ledger),
                )
            }
        })
    }
}
