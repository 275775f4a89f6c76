//! Running a pipeline's components as supervised child processes.
//!
//! - `state.rs`: the life of one component, a pure transition function.
//! - `restart.rs`: restart policy, backoff and start limit.
//! - `order.rs`: start and stop order across components.
//! - `env.rs`, `command.rs`, `spawn.rs`: what a child is started with and how.
//! - `fdlimit.rs`: the supervisor's raised fd limit, and the original one children get.
//! - `reaper.rs`: subreaper and the one `waitpid(-1)` loop.
//! - `descendants.rs`: processes that left their component's process group, and the record a
//!   killed supervisor's successor ends them from.
//! - `reload.rs`: what a reload changes, a pure diff of running and new plans.
//! - `slots.rs`: components by an index that never shifts or is reused.
//! - `runner.rs`: the event loop that executes decisions; `runner/leftovers.rs` its part in
//!   ending processes that left their component's group.

pub mod command;
pub mod descendants;
pub mod env;
pub mod fdlimit;
pub mod order;
pub mod reaper;
pub mod reload;
pub mod restart;
pub mod runner;
pub mod slots;
pub mod spawn;
pub mod state;
pub mod testplan;

pub use runner::{
    FinalState, RunSummary, Supervisor, SupervisorError, SupervisorHandle, SupervisorOptions,
};
pub use state::{State, StateName};
