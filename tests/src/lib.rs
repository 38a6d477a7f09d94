//! Test support: the loopback collector, Go fixture builds and child processes.

pub mod collector;
pub mod gobuild;
pub mod http;
pub mod procs;

pub use collector::{Collector, Recorded, decode_with_official_stubs, repo_root};
