//! flowctl: a systemd-native supervisor and control plane for Stellar data pipelines.
pub mod api;
pub mod backfill;
pub mod chunks;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod logsink;
pub mod metrics;
pub mod plan;
pub mod probe;
pub mod registry;
pub mod replay;
pub mod spec;
pub mod stderr;
pub mod supervisor;
pub mod systemd;
