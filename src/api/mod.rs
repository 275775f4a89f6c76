//! The control socket: the daemon serves it, `flowctl-sup status|start|stop|restart|reload` and
//! `flowctl` talk to it.

pub mod client;
pub mod protocol;
pub mod render;
pub mod server;
pub mod socket;

pub use protocol::{Request, Response};
