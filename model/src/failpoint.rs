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
//! In one process holding several nodes (the scenario harness), failpoints
//! are armed per node instead: each node runs on its own threads, which
//! [`enter_scope`] names; [`arm`] arms a failpoint for one scope, and a
//! blocking failpoint reached there is reported to [`wait_hit`] rather than
//! only printed.
//!
//! Unarmed failpoints cost one lookup in a map read once (and one atomic
//! load while no scoped failpoint is armed).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

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

/// Stops here forever if `name` is armed to block (for the process, or for
/// the scope of the current thread).
pub async fn hit(name: &str) {
    let mut blocks = matches!(armed().get(name), Some(Mode::Block));
    if let Some(scope) = scoped(|scope, map| matches!(map.get(name), Some(Mode::Block)).then(|| scope.to_string())) {
        let (lock, reached) = registry();
        lock.lock().unwrap_or_else(|e| e.into_inner()).hits.push((scope, name.to_string()));
        reached.notify_all();
        blocks = true;
    }
    if blocks {
        eprintln!("failpoint {name} reached");
        tracing::warn!(failpoint = name, "failpoint reached; blocking");
        std::future::pending::<()>().await;
    }
}

/// An injected failure if `name` is armed to fail (and has failures left).
pub fn fail(name: &str) -> Result<(), String> {
    fail_in(armed(), name)?;
    scoped(|_, map| map.contains_key(name).then(|| fail_in(map, name))).unwrap_or(Ok(()))
}

thread_local! {
    /// The node the current thread works for, in a process of several.
    static SCOPE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Failpoints armed per scope, and the blocking ones reached.
#[derive(Default)]
struct Scoped {
    armed: HashMap<String, HashMap<String, Mode>>,
    hits: Vec<(String, String)>,
}

fn registry() -> &'static (Mutex<Scoped>, Condvar) {
    static REGISTRY: OnceLock<(Mutex<Scoped>, Condvar)> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Whether any scoped failpoint was ever armed: until then nothing else is
/// looked at.
static ANY_SCOPED: AtomicBool = AtomicBool::new(false);

/// Calls `f` with the current thread's scope and its armed failpoints, if
/// it has a scope with any.
fn scoped<T>(f: impl FnOnce(&str, &HashMap<String, Mode>) -> Option<T>) -> Option<T> {
    if !ANY_SCOPED.load(Ordering::Relaxed) {
        return None;
    }
    let scope = SCOPE.with(|s| s.borrow().clone())?;
    let registry = registry().0.lock().unwrap_or_else(|e| e.into_inner());
    let map = registry.armed.get(&scope)?;
    f(&scope, map)
}

/// Names the scope of the current thread (a node of an in-process
/// cluster); call it from the node's runtime's `on_thread_start`.
pub fn enter_scope(scope: &str) {
    SCOPE.with(|s| *s.borrow_mut() = Some(scope.to_string()));
}

/// Arms `name` for `scope` with an action as in `TESSERA_FAILPOINTS`
/// (`block`, `error`, `error*N`, `panic`, `panic*N`).
pub fn arm(scope: &str, name: &str, action: &str) -> Result<(), String> {
    let spec = if action == "block" { name.to_string() } else { format!("{name}={action}") };
    let mut parsed = parse(&spec);
    let mode = parsed.remove(name).ok_or_else(|| format!("failpoint {name}: unknown action \"{action}\""))?;
    registry().0.lock().unwrap_or_else(|e| e.into_inner()).armed.entry(scope.to_string()).or_default().insert(name.to_string(), mode);
    ANY_SCOPED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Disarms every failpoint of `scope` and forgets its hits.
pub fn disarm(scope: &str) {
    let mut registry = registry().0.lock().unwrap_or_else(|e| e.into_inner());
    registry.armed.remove(scope);
    registry.hits.retain(|(s, _)| s != scope);
}

/// Waits until a blocking failpoint `name` has been reached in `scope`
/// (at most `timeout`); true if it was.
pub fn wait_hit(scope: &str, name: &str, timeout: Duration) -> bool {
    let (lock, reached) = registry();
    let deadline = Instant::now() + timeout;
    let mut registry = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if registry.hits.iter().any(|(s, n)| s == scope && n == name) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        registry = reached.wait_timeout(registry, left).unwrap_or_else(|e| e.into_inner()).0;
    }
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
    fn scoped_failpoints_fire_only_on_their_scope_and_report_hits() {
        arm("test-a", "p.fail", "error*1").unwrap();
        arm("test-a", "p.block", "block").unwrap();
        assert!(arm("test-a", "p.bad", "explode").is_err());
        assert!(fail("p.fail").is_ok(), "a thread without a scope is not affected");
        let other = std::thread::spawn(|| {
            enter_scope("test-b");
            fail("p.fail")
        });
        assert!(other.join().unwrap().is_ok(), "another scope is not affected");
        std::thread::spawn(|| {
            enter_scope("test-a");
            assert!(fail("p.fail").is_err());
            assert!(fail("p.fail").is_ok(), "the count ran out");
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let blocked = runtime.block_on(async { tokio::time::timeout(Duration::from_millis(50), hit("p.block")).await });
            assert!(blocked.is_err(), "a blocking failpoint blocks");
        })
        .join()
        .unwrap();
        assert!(wait_hit("test-a", "p.block", Duration::from_secs(5)));
        assert!(!wait_hit("test-b", "p.block", Duration::from_millis(10)));
        disarm("test-a");
        assert!(!wait_hit("test-a", "p.block", Duration::from_millis(10)));
    }

    #[test]
    fn counted_panics_run_out() {
        let map = parse("p=panic*1");
        assert!(std::panic::catch_unwind(|| fail_in(&map, "p")).is_err());
        assert!(fail_in(&map, "p").is_ok());
    }
}
