//! Shared code of the bundled Stellar components.

pub mod sink;
pub mod source;
