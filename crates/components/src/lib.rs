//! Shared code of the bundled Stellar components.
