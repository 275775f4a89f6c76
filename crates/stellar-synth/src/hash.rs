//! SHA-256 over XDR written straight into the hasher: a ledger hashes its header, tx set,
//! result set and every envelope, and encoding each into a throw-away buffer first was a
//! large share of the generator's time.

use std::io::{self, BufWriter, Write};

use sha2::{Digest, Sha256};
use stellar_xdr::{EnvelopeType, Hash, Limited, Limits, Transaction, WriteXdr};

struct Sink(Sha256);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An XDR writer whose bytes are hashed; XDR writes come 4 bytes at a time, so they are
/// gathered in a small buffer before they reach the hash.
pub(crate) struct XdrHasher(Limited<BufWriter<Sink>>);

impl XdrHasher {
    pub fn new() -> Self {
        XdrHasher(Limited::new(
            BufWriter::with_capacity(4096, Sink(Sha256::new())),
            Limits::none(),
        ))
    }

    pub fn write<T: WriteXdr>(&mut self, v: &T) -> &mut Self {
        v.write_xdr(&mut self.0).expect("generated XDR encodes");
        self
    }

    pub fn finish(self) -> [u8; 32] {
        let sink = self
            .0
            .inner
            .into_inner()
            .unwrap_or_else(|_| unreachable!("hashing never fails to write"));
        sink.0.finalize().into()
    }
}

/// SHA-256 of the XDR of `v`: the hash Stellar uses for headers, tx sets and result sets.
pub(crate) fn xdr_hash<T: WriteXdr>(v: &T) -> [u8; 32] {
    let mut h = XdrHasher::new();
    h.write(v);
    h.finish()
}

/// The hash of a transaction: SHA-256 of its `TransactionSignaturePayload`, i.e. the network
/// id, the `ENVELOPE_TYPE_TX` tag and the transaction, written without copying the
/// transaction into a payload value.
pub(crate) fn transaction_hash(network_id: &[u8; 32], tx: &Transaction) -> [u8; 32] {
    let mut h = XdrHasher::new();
    h.write(&Hash(*network_id))
        .write(&EnvelopeType::Tx)
        .write(tx);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{
        Memo, MuxedAccount, Preconditions, SequenceNumber, TransactionEnvelope, TransactionExt,
        TransactionV1Envelope, Uint256,
    };

    #[test]
    fn transaction_hash_is_the_envelope_hash_stellar_xdr_computes() {
        let tx = Transaction {
            source_account: MuxedAccount::Ed25519(Uint256([7; 32])),
            fee: 100,
            seq_num: SequenceNumber(42),
            cond: Preconditions::None,
            memo: Memo::Text("synthetic".try_into().unwrap()),
            operations: Default::default(),
            ext: TransactionExt::V0,
        };
        let network_id = [3u8; 32];
        let env = TransactionEnvelope::Tx(TransactionV1Envelope {
            tx: tx.clone(),
            signatures: Default::default(),
        });
        assert_eq!(
            transaction_hash(&network_id, &tx),
            env.hash(network_id).unwrap()
        );
    }

    #[test]
    fn xdr_hash_is_sha256_of_the_encoded_bytes() {
        let v = Hash([9; 32]);
        let bytes = v.to_xdr(Limits::none()).unwrap();
        assert_eq!(xdr_hash(&v), <[u8; 32]>::from(Sha256::digest(&bytes)));
    }
}
