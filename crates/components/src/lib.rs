//! Shared code of the bundled Stellar components.

pub mod analytics;
pub mod arrow;
pub mod backoff;
pub mod contract_data;
pub mod grpc;
pub mod process;
pub mod processor;
pub mod shutdown;
pub mod sink;
pub mod source;
