//! Compiles `proto/` with protox (pure Rust), so building needs no system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "flowctl/control_plane.proto",
        "flowctl/v1/control_plane.proto",
        "flowctl/v1/dead_letter.proto",
        "flowctl/v1/replay.proto",
        "raw_ledger_service/raw_ledger_service.proto",
        "token_transfer_service/event_service.proto",
        "token_transfer/token_transfer_event.proto",
        "asset/asset.proto",
        "contract_data/contract_data_service.proto",
    ];
    let descriptors = protox::compile(files, [&proto_root])?;
    tonic_prost_build::configure()
        // Ledgers are large: as `Bytes` they are sliced out of the receive buffer, and a
        // source's cache shares them instead of copying.
        .bytes(".raw_ledger_service.RawLedger.ledger_close_meta_xdr")
        .codec_path("crate::codec::ProstCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed={}", proto_root.display());
    Ok(())
}
