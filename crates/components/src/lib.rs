//! Shared code of the bundled Stellar components.
pub mod processor;
