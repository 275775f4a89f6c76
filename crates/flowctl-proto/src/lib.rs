//! Generated code for every gRPC package in `proto/`, in one place so that the supervisor,
//! the SDK and the components all speak exactly the same contract.

#![allow(clippy::all, missing_docs)]

pub mod codec;

/// `package flowctl`: the control plane of the Go flowctl's components.
pub mod flowctl {
    tonic::include_proto!("flowctl");

    /// `package flowctl.v1`: the newer control plane of flowctl-sdk components.
    pub mod v1 {
        tonic::include_proto!("flowctl.v1");
    }
}

/// `package raw_ledger_service`: the ledger source.
pub mod raw_ledger_service {
    tonic::include_proto!("raw_ledger_service");
}

/// `package token_transfer_service`: the processor's event stream.
pub mod token_transfer_service {
    tonic::include_proto!("token_transfer_service");
}

/// `package token_transfer`: the events.
pub mod token_transfer {
    tonic::include_proto!("token_transfer");
}

/// `package asset`: Stellar assets.
pub mod asset {
    tonic::include_proto!("asset");
}

/// `package contract_data`: Soroban contract-data changes (`contract-data-processor`).
pub mod contract_data {
    tonic::include_proto!("contract_data");
}
