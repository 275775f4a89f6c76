//! What the tests and benchmarks of the workspace share besides the `flowctl-testkit` program:
//! a throwaway PostgreSQL server.

pub mod postgres;
