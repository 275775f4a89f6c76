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
//! Same seed → byte-identical ledgers, and ledger N is the same whatever ledger a generator
//! starts at: ledgers come in epochs of [`EPOCH_LEDGERS`], each beginning from a network
//! state derived from the seed and the epoch alone, so ledger N is built from at most 63
//! ledgers before it. Shards of a range and a replay of part of it therefore see the ledgers
//! one run of the whole range sees. Headers chain by hash inside an epoch; an epoch's first
//! ledger names a previous-ledger hash drawn from the seed, and balances, sequence numbers,
//! the fee pool and the offer start over with it.

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
    /// Sequence number of the first ledger produced (ledger N does not depend on it).
    pub first_ledger: u32,
    /// Protocol of the ledger headers: 23 and later give LCM V2 with TransactionMeta V4,
    /// earlier ones (20–22) LCM V1 with TransactionMeta V3.
    pub protocol_version: u32,
    /// Transactions in each ledger.
    pub txs_per_ledger: u32,
    /// Size of the pool of ordinary accounts that pay each other.
    pub accounts: u32,
    /// Close time of ledger 2, the network's first after genesis, Unix seconds; ledger N
    /// closes `close_interval_secs` × (N − 2) later.
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

/// Ledgers in an epoch: a multiple of 64, the step Stellar's own tools cut history on, so a
/// shard boundary never falls inside one.
pub const EPOCH_LEDGERS: u32 = 64;

/// The first ledger of the epoch holding `seq` (ledger 2 for the first epoch: 0 and 1 are
/// before the network).
pub fn epoch_start(seq: u32) -> u32 {
    (seq / EPOCH_LEDGERS * EPOCH_LEDGERS).max(2)
}

/// Produces consecutive ledgers from `Config::first_ledger` on.
pub struct Generator {
    cfg: Config,
    network_id: [u8; 32],
    epoch: Epoch,
    next_seq: u32,
    /// Size of the last ledger's XDR, to size the next one's buffer.
    last_xdr_len: usize,
}

/// The state ledgers are built from, started over at each epoch.
struct Epoch {
    start: u32,
    rng: ChaCha8Rng,
    world: accounts::World,
    prev_header_hash: [u8; 32],
    fee_pool: i64,
}

impl Epoch {
    /// The network as it stands before ledger `start`, from the seed and `start` alone.
    fn at(cfg: &Config, network_id: &[u8; 32], start: u32) -> Epoch {
        // Account keys come from the seed only: the same accounts trade in every epoch.
        let mut keys = ChaCha8Rng::seed_from_u64(cfg.seed);
        let world = accounts::World::new(cfg, network_id, &mut keys, start - 1);
        let mut epoch_seed = Sha256::new();
        epoch_seed.update(b"stellar-synth epoch");
        epoch_seed.update(cfg.seed.to_be_bytes());
        epoch_seed.update(start.to_be_bytes());
        let mut rng = ChaCha8Rng::from_seed(epoch_seed.finalize().into());
        Epoch {
            start,
            prev_header_hash: rng.random(),
            rng,
            world,
            fee_pool: 0,
        }
    }
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
        let start = epoch_start(cfg.first_ledger);
        let mut generator = Generator {
            epoch: Epoch::at(&cfg, &network_id, start),
            next_seq: start,
            network_id,
            last_xdr_len: 0,
            cfg,
        };
        generator.seek(generator.cfg.first_ledger);
        Ok(generator)
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
        if epoch_start(seq) != self.epoch.start {
            self.epoch = Epoch::at(&self.cfg, &self.network_id, seq);
        }
        let close_time =
            self.cfg.first_close_time + u64::from(seq - 2) * self.cfg.close_interval_secs;
        let epoch = &mut self.epoch;
        let ledger = build::ledger(
            &self.cfg,
            &self.network_id,
            &mut epoch.rng,
            &mut epoch.world,
            build::LedgerParams {
                seq,
                close_time,
                prev_header_hash: epoch.prev_header_hash,
                fee_pool: &mut epoch.fee_pool,
            },
        );
        let header = match &ledger {
            LedgerCloseMeta::V0(m) => &m.ledger_header,
            LedgerCloseMeta::V1(m) => &m.ledger_header,
            LedgerCloseMeta::V2(m) => &m.ledger_header,
        };
        self.epoch.prev_header_hash = header.hash.0;
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

    /// Moves so that the next ledger is `seq` (at least 2), forwards or back, building at
    /// most the ledgers of its epoch before it.
    pub fn seek(&mut self, seq: u32) {
        let seq = seq.max(2);
        let start = epoch_start(seq);
        if seq < self.next_seq || start > self.next_seq {
            self.epoch = Epoch::at(&self.cfg, &self.network_id, start);
            self.next_seq = start;
        }
        while self.next_seq < seq {
            self.next_ledger();
        }
    }
}
