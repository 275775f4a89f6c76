//! flowctl: a systemd-native supervisor and control plane for Stellar data pipelines.
pub mod plan;
