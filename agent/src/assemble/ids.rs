//! Trace and segment ids: a random 64-bit prefix per agent run plus a counter, so ids are
//! unique across agents and restarts without coordination.
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct IdGenerator {
    prefix: u64,
    counter: AtomicU64,
}

impl IdGenerator {
    pub fn new() -> IdGenerator {
        IdGenerator {
            prefix: rand::random(),
            counter: AtomicU64::new(1),
        }
    }

    /// A new 32-hex-digit id.
    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:016x}", self.prefix, n)
    }
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_within_and_across_generators() {
        let a = IdGenerator::new();
        let b = IdGenerator::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(a.next()));
            assert!(seen.insert(b.next()));
        }
        assert!(seen.iter().all(|id| id.len() == 32));
    }
}
