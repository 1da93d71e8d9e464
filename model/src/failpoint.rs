//! Failpoints for crash and fault tests: named places in a protocol where a
//! process can be made to stop, or an operation made to fail, so a test can
//! SIGKILL it at exactly that moment or watch the retries.
//!
//! `TESSERA_FAILPOINTS=name1,name2=error*3` arms failpoints for the process:
//! - `name`: [`hit`] prints `failpoint <name> reached` on stderr and then
//!   blocks the task forever;
//! - `name=error`: [`fail`] returns an error every time;
//! - `name=error*N`: [`fail`] returns an error the first N times;
//! - `name=panic`, `name=panic*N`: [`fail`] panics (every time, or the first
//!   N times), for tests of what a panic in a request leaves behind.
//!
//! Unarmed failpoints cost one lookup in a map read once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

enum Mode {
    Block,
    /// Fail this many more times (`u64::MAX`: always).
    Error(AtomicU64),
    /// Panic this many more times.
    Panic(AtomicU64),
}

fn armed() -> &'static HashMap<String, Mode> {
    static ARMED: OnceLock<HashMap<String, Mode>> = OnceLock::new();
    ARMED.get_or_init(|| parse(&std::env::var("TESSERA_FAILPOINTS").unwrap_or_default()))
}

fn parse(spec: &str) -> HashMap<String, Mode> {
    let mut map = HashMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, mode) = match item.split_once('=') {
            None => (item, Mode::Block),
            Some((name, "error")) => (name, Mode::Error(AtomicU64::new(u64::MAX))),
            Some((name, "panic")) => (name, Mode::Panic(AtomicU64::new(u64::MAX))),
            Some((name, action)) => {
                let count = |prefix: &str| action.strip_prefix(prefix).and_then(|n| n.parse().ok()).map(AtomicU64::new);
                match (count("error*"), count("panic*")) {
                    (Some(n), _) => (name, Mode::Error(n)),
                    (_, Some(n)) => (name, Mode::Panic(n)),
                    _ => {
                        eprintln!("failpoint {name}: unknown action \"{action}\" (use error, error*N, panic or panic*N); ignored");
                        continue;
                    }
                }
            }
        };
        map.insert(name.trim().to_string(), mode);
    }
    map
}

/// Stops here forever if `name` is armed to block.
pub async fn hit(name: &str) {
    if let Some(Mode::Block) = armed().get(name) {
        eprintln!("failpoint {name} reached");
        tracing::warn!(failpoint = name, "failpoint reached; blocking");
        std::future::pending::<()>().await;
    }
}

/// An injected failure if `name` is armed to fail (and has failures left).
pub fn fail(name: &str) -> Result<(), String> {
    fail_in(armed(), name)
}

fn fail_in(map: &HashMap<String, Mode>, name: &str) -> Result<(), String> {
    let (left, panics) = match map.get(name) {
        Some(Mode::Error(left)) => (left, false),
        Some(Mode::Panic(left)) => (left, true),
        _ => return Ok(()),
    };
    let taken = left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| match n {
        0 => None,
        u64::MAX => Some(u64::MAX),
        n => Some(n - 1),
    });
    match (taken, panics) {
        (Err(_), _) => Ok(()),
        (Ok(_), true) => {
            eprintln!("failpoint {name} panics");
            panic!("injected panic at failpoint {name}");
        }
        (Ok(_), false) => {
            eprintln!("failpoint {name} failed an operation");
            Err(format!("injected failure at failpoint {name}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_failures_run_out() {
        let map = parse("a=error*2, b=error, c, d=explode");
        assert!(fail_in(&map, "a").is_err());
        assert!(fail_in(&map, "a").is_err());
        assert!(fail_in(&map, "a").is_ok());
        for _ in 0..5 {
            assert!(fail_in(&map, "b").is_err());
        }
        assert!(fail_in(&map, "c").is_ok(), "a blocking failpoint does not fail");
        assert!(!map.contains_key("d"));
    }

    #[test]
    fn counted_panics_run_out() {
        let map = parse("p=panic*1");
        assert!(std::panic::catch_unwind(|| fail_in(&map, "p")).is_err());
        assert!(fail_in(&map, "p").is_ok());
    }
}
