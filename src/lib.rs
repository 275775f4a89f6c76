//! flowctl: a systemd-native supervisor and control plane for Stellar data pipelines.
pub mod api;
pub mod cli;
pub mod config;
pub mod logsink;
pub mod plan;
pub mod spec;
pub mod probe;
pub mod supervisor;
pub mod systemd;
