//! Test support: the loopback collector and Go fixture builds.

pub mod collector;

pub use collector::{Collector, Recorded, decode_with_official_stubs};
