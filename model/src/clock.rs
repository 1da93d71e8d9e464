//! The node's wall clock, as leases read it.
//!
//! `TESSERA_CLOCK_OFFSET_MS` (a signed number of milliseconds, read once)
//! shifts it: tests run a node whose clock is off by a known amount and
//! check that the coordinator notices and fails the group over.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

fn offset_ms() -> i64 {
    static OFFSET: OnceLock<i64> = OnceLock::new();
    *OFFSET.get_or_init(|| std::env::var("TESSERA_CLOCK_OFFSET_MS").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0))
}

/// Milliseconds since the Unix epoch on this node's (possibly shifted) clock.
pub fn now_unix_ms() -> u64 {
    let real = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    real.saturating_add(offset_ms()).max(0) as u64
}

/// Microseconds since the Unix epoch on the real clock (not shifted), for
/// transaction timestamps and the times records carry.
pub fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}
