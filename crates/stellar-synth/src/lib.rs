//! A deterministic generator of valid Stellar `LedgerCloseMeta`.
//!
//! The ledgers are what stellar-core would emit for a small, busy network: classic XLM and
//! USDC payments, path payments that cross a market maker's offer, failed payments that only
//! pay their fee, and Soroban calls of the native Stellar Asset Contract (`transfer`) with
//! their contract events, resource fees and refunds. Every balance move shows up both in the
//! operations/results and in the ledger-entry changes, so a token-transfer processor's
//! conservation check (events' balance deltas == entry changes' deltas, per transaction)
//! holds on every ledger. Transaction hashes are the real hashes of the envelopes under the
//! configured network passphrase, so tx-set envelopes and `tx_processing` entries match.
//!
//! Same [`Config`] (seed included) → byte-identical ledgers.

mod accounts;
mod build;
mod hash;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use stellar_xdr::{LedgerCloseMeta, Limited, Limits, WriteXdr};

pub use accounts::NATIVE_SAC_TRANSFER;

/// The testnet passphrase: processors configured for testnet accept synthetic ledgers as-is.
pub const DEFAULT_PASSPHRASE: &str = "Test SDF Network ; September 2015";

/// What to generate.
#[derive(Debug, Clone)]
pub struct Config {
    /// Hashes transactions and derives the SAC contract ids; the processor must use the same.
    pub network_passphrase: String,
    /// Everything random derives from it.
    pub seed: u64,
    /// Sequence number of the first ledger produced.
    pub first_ledger: u32,
    /// Protocol of the ledger headers: 23 and later give LCM V2 with TransactionMeta V4,
    /// earlier ones (20–22) LCM V1 with TransactionMeta V3.
    pub protocol_version: u32,
    /// Transactions in each ledger.
    pub txs_per_ledger: u32,
    /// Size of the pool of ordinary accounts that pay each other.
    pub accounts: u32,
    /// Close time of the first ledger, Unix seconds.
    pub first_close_time: u64,
    /// Seconds between two ledgers' close times.
    pub close_interval_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            network_passphrase: DEFAULT_PASSPHRASE.to_string(),
            seed: 1,
            first_ledger: 2,
            protocol_version: 23,
            txs_per_ledger: 50,
            accounts: 1000,
            // 2025-01-01T00:00:00Z
            first_close_time: 1_735_689_600,
            close_interval_secs: 5,
        }
    }
}

/// A configuration the generator cannot honour.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("protocol_version {0} is not supported: use 20 to 25 (23+ gives LCM V2)")]
    Protocol(u32),
    #[error("accounts must be at least 2 to have payments between them, got {0}")]
    Accounts(u32),
    #[error("first_ledger must be at least 2 (ledger 1 is genesis), got {0}")]
    FirstLedger(u32),
}

/// Produces consecutive ledgers from `Config::first_ledger` on.
pub struct Generator {
    cfg: Config,
    network_id: [u8; 32],
    rng: ChaCha8Rng,
    world: accounts::World,
    next_seq: u32,
    prev_header_hash: [u8; 32],
    fee_pool: i64,
    /// Size of the last ledger's XDR, to size the next one's buffer.
    last_xdr_len: usize,
}

impl Generator {
    pub fn new(cfg: Config) -> Result<Self, ConfigError> {
        if !(20..=25).contains(&cfg.protocol_version) {
            return Err(ConfigError::Protocol(cfg.protocol_version));
        }
        if cfg.accounts < 2 {
            return Err(ConfigError::Accounts(cfg.accounts));
        }
        if cfg.first_ledger < 2 {
            return Err(ConfigError::FirstLedger(cfg.first_ledger));
        }
        let network_id: [u8; 32] = Sha256::digest(cfg.network_passphrase.as_bytes()).into();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let world = accounts::World::new(&cfg, &network_id, &mut rng);
        let prev_header_hash = rng.random();
        Ok(Generator {
            next_seq: cfg.first_ledger,
            network_id,
            rng,
            world,
            prev_header_hash,
            fee_pool: 0,
            last_xdr_len: 0,
            cfg,
        })
    }

    /// Sequence number of the ledger the next call to [`Generator::next_ledger`] returns.
    pub fn next_sequence(&self) -> u32 {
        self.next_seq
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Builds the next ledger and advances the world state.
    pub fn next_ledger(&mut self) -> LedgerCloseMeta {
        let seq = self.next_seq;
        let close_time = self.cfg.first_close_time
            + u64::from(seq - self.cfg.first_ledger) * self.cfg.close_interval_secs;
        let ledger = build::ledger(
            &self.cfg,
            &self.network_id,
            &mut self.rng,
            &mut self.world,
            build::LedgerParams {
                seq,
                close_time,
                prev_header_hash: self.prev_header_hash,
                fee_pool: &mut self.fee_pool,
            },
        );
        let header = match &ledger {
            LedgerCloseMeta::V0(m) => &m.ledger_header,
            LedgerCloseMeta::V1(m) => &m.ledger_header,
            LedgerCloseMeta::V2(m) => &m.ledger_header,
        };
        self.prev_header_hash = header.hash.0;
        self.next_seq += 1;
        ledger
    }

    /// The next ledger as raw XDR, the form sources serve.
    pub fn next_ledger_xdr(&mut self) -> Vec<u8> {
        let ledger = self.next_ledger();
        // Sized from the previous ledger, so the buffer is not regrown (and copied) as it fills.
        let mut out = Limited::new(
            Vec::with_capacity(self.last_xdr_len + self.last_xdr_len / 4),
            Limits::none(),
        );
        ledger
            .write_xdr(&mut out)
            .expect("a generated ledger always encodes");
        self.last_xdr_len = out.inner.len();
        out.inner
    }

    /// Advances to `seq` (which must not be behind) without keeping the skipped ledgers.
    pub fn skip_to(&mut self, seq: u32) {
        while self.next_seq < seq {
            self.next_ledger();
        }
    }
}
