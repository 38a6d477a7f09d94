//! Test support: the loopback collector and Go fixture builds.
