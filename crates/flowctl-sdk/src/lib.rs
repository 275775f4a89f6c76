//! Component SDK for flowctl pipeline components.
