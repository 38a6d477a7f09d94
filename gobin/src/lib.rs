//! Go binary inspection.
