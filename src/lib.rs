//! flowctl: a systemd-native supervisor and control plane for Stellar data pipelines.
pub mod cli;
pub mod config;
pub mod plan;
pub mod spec;
pub mod systemd;
