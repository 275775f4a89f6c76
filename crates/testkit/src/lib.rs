//! What the tests and benchmarks of the workspace share besides the `flowctl-testkit` program:
//! a throwaway PostgreSQL server, and data lakes written from ledgers.

pub mod lake;
pub mod postgres;
