//! Kernel timestamps are CLOCK_MONOTONIC nanoseconds; SkyWalking wants wall-clock
//! milliseconds. The offset between the two clocks is sampled at start and refreshed, so a
//! wall-clock step (NTP) reaches spans within one refresh.
use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};

/// How often the offset is sampled again.
pub const REFRESH: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct WallClock {
    /// realtime - monotonic, in nanoseconds.
    offset_ns: i128,
    sampled: Instant,
}

fn now_ns(id: ClockId) -> i128 {
    clock_gettime(id)
        .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
        .unwrap_or(0)
}

impl WallClock {
    pub fn new() -> WallClock {
        WallClock {
            offset_ns: sample(),
            sampled: Instant::now(),
        }
    }

    /// Wall-clock milliseconds since the Unix epoch for a CLOCK_MONOTONIC nanosecond stamp.
    pub fn unix_ms(&mut self, monotonic_ns: u64) -> i64 {
        if self.sampled.elapsed() >= REFRESH {
            self.offset_ns = sample();
            self.sampled = Instant::now();
        }
        let ns = i128::from(monotonic_ns) + self.offset_ns;
        i64::try_from(ns / 1_000_000).unwrap_or(0)
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads monotonic between two realtime reads and takes the midpoint, which bounds the
/// error by half the time the reads took.
fn sample() -> i128 {
    let r1 = now_ns(ClockId::CLOCK_REALTIME);
    let m = now_ns(ClockId::CLOCK_MONOTONIC);
    let r2 = now_ns(ClockId::CLOCK_REALTIME);
    (r1 + r2) / 2 - m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_now_to_now() {
        let mut c = WallClock::new();
        let mono = now_ns(ClockId::CLOCK_MONOTONIC) as u64;
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!((c.unix_ms(mono) - wall_ms).abs() <= 2);
    }
}
