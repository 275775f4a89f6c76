//! The protobuf codec every generated service and client uses: tonic-prost's encoder, and a
//! decoder that reads each message from one contiguous `Bytes`.
//!
//! tonic hands a decoder the message inside its receive buffer. Decoding through that
//! buffer's `Buf` pays its bookkeeping on every field, a third of a sink's CPU on a stream of
//! small events; taking the message out first (a reference-counted split, no copy) lets prost
//! walk plain memory, and `bytes` fields such as a ledger's XDR stay slices of it.

use std::marker::PhantomData;

use prost::bytes::Buf;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::ProstEncoder;

#[derive(Debug, Clone, Copy)]
pub struct ProstCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProstCodec<T, U> {
    fn default() -> Self {
        ProstCodec(PhantomData)
    }
}

impl<T, U> Codec for ProstCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ContiguousDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ContiguousDecoder(PhantomData)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ContiguousDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for ContiguousDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let message = buf.copy_to_bytes(buf.remaining());
        U::decode(message)
            .map(Some)
            // As gRPC's status codes say of a message that does not parse.
            .map_err(|e| Status::internal(e.to_string()))
    }
}
