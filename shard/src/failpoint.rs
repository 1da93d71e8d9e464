//! Failpoints for crash tests: named places in a protocol where a process
//! can be made to stop, so a test can SIGKILL it at exactly that moment.
//!
//! `TESSERA_FAILPOINTS=name1,name2` arms failpoints for the process. An armed
//! failpoint prints `failpoint <name> reached` on stderr and then blocks the
//! task forever. Unarmed failpoints cost one lookup in a set read once.

use std::collections::HashSet;
use std::sync::OnceLock;

fn armed() -> &'static HashSet<String> {
    static ARMED: OnceLock<HashSet<String>> = OnceLock::new();
    ARMED.get_or_init(|| std::env::var("TESSERA_FAILPOINTS").unwrap_or_default().split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

/// Stops here forever if `name` is armed.
pub async fn hit(name: &str) {
    if armed().contains(name) {
        eprintln!("failpoint {name} reached");
        tracing::warn!(failpoint = name, "failpoint reached; blocking");
        std::future::pending::<()>().await;
    }
}
