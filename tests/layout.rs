//! The source layout's rules, read off the code.
//!
//! - The coordinator depends on `tessera-model`, `tessera-storage` and
//!   `tessera-proto`, never on the shard server (`tessera-shard`).
//! - The coordinator keeps its catalog and journal through the storage
//!   engine trait (`tessera-storage`), never RocksDB directly, so its
//!   recovery can be tested on the memory and crash engines.
//! - `tessera-model` links no RocksDB (so what depends on it alone builds
//!   without RocksDB's C++).
//! - No new import cycles between the files of a crate. A file imports
//!   another when it names it through `crate::`, `super::` or (in a module
//!   root) one of its own child modules; a parent's `pub use` of a child is
//!   a re-export, not an import. Code after `#[cfg(test)]` does not count.
//!   Each cycle still left is listed in [`KNOWN_CYCLES`]: a new cycle, or a
//!   listed one that grew, fails; so does a listed one that is gone (take
//!   it off the list). None is left.
//! - The coordinator's layers: `sql/` imports only plans, the catalog,
//!   errors and results; plans only the catalog and errors; transactions,
//!   sagas and failover never import `sql/` or `exec/` ([`MAY_IMPORT_ONLY`],
//!   [`MAY_NOT_IMPORT`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The cycles not yet broken, each as the set of files in it (none now:
/// the list stays so that one can be recorded while it is being broken).
const KNOWN_CYCLES: &[(&str, &[&str])] = &[];

/// The coordinator's layers: the files under a part may import only the
/// parts listed (`sql/` plans against the catalog and the model and nothing
/// above it; plans depend on the catalog alone).
const MAY_IMPORT_ONLY: &[(&str, &[&str])] =
    &[("sql/", &["sql/", "plan/", "catalog/", "error.rs", "result.rs"]), ("plan/", &["plan/", "catalog/", "error.rs"]), ("result.rs", &[])];

/// Parts of the coordinator that must not import others: the protocols
/// (transactions, sagas, failover) never reach up into the SQL layer or the
/// executor.
const MAY_NOT_IMPORT: &[(&str, &[&str])] = &[
    ("txn/", &["sql/", "exec/", "saga/", "session.rs", "api/", "postgres/"]),
    ("saga/", &["sql/", "exec/", "session.rs", "api/", "postgres/"]),
    ("failover/", &["sql/", "exec/", "saga/", "txn/", "session.rs", "api/", "postgres/"]),
    ("read.rs", &["sql/", "exec/", "saga/", "txn/", "session.rs"]),
];

const CRATES: &[&str] = &["model", "storage", "shard", "coordinator", "proto", "."];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_coordinator_does_not_depend_on_the_shard_server() {
    let manifest = std::fs::read_to_string(root().join("coordinator/Cargo.toml")).unwrap();
    let deps: Vec<&str> = manifest.lines().filter(|l| l.starts_with("tessera-")).collect();
    assert!(!deps.iter().any(|l| l.starts_with("tessera-shard")), "coordinator/Cargo.toml: {deps:?}");
    assert!(deps.iter().any(|l| l.starts_with("tessera-model")), "coordinator/Cargo.toml: {deps:?}");
    for file in rust_files(&root().join("coordinator/src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!code(&text).contains("tessera_shard::"), "{} names tessera_shard", file.display());
    }
}

#[test]
fn the_coordinator_stores_through_the_engine_trait() {
    let manifest = std::fs::read_to_string(root().join("coordinator/Cargo.toml")).unwrap();
    assert!(!manifest.lines().any(|l| l.starts_with("rocksdb")), "coordinator/Cargo.toml depends on rocksdb");
    for file in rust_files(&root().join("coordinator/src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!code(&text).contains("rocksdb::"), "{} names rocksdb", file.display());
    }
}

#[test]
fn the_model_links_no_rocksdb() {
    let manifest = std::fs::read_to_string(root().join("model/Cargo.toml")).unwrap();
    let deps: Vec<&str> = manifest.lines().filter(|l| l.contains(".workspace = true")).collect();
    assert!(
        deps.iter().all(|l| !l.starts_with("rocksdb") && !l.starts_with("tessera-storage") && !l.starts_with("tessera-shard")),
        "model/Cargo.toml: {deps:?}"
    );
}

#[test]
fn no_new_import_cycles() {
    let mut problems = Vec::new();
    let mut found: BTreeSet<(String, BTreeSet<String>)> = BTreeSet::new();
    for krate in CRATES {
        let src = root().join(krate).join("src");
        for cycle in cycles(&imports(&src)) {
            found.insert((krate.to_string(), cycle));
        }
    }
    let known: BTreeSet<(String, BTreeSet<String>)> =
        KNOWN_CYCLES.iter().map(|(k, files)| (k.to_string(), files.iter().map(|f| f.to_string()).collect())).collect();
    for (krate, cycle) in found.difference(&known) {
        problems.push(format!("{krate}: import cycle {cycle:?}"));
    }
    for (krate, cycle) in known.difference(&found) {
        problems.push(format!("{krate}: the cycle {cycle:?} is gone or changed; update KNOWN_CYCLES"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn coordinator_layers_import_only_below_them() {
    let graph = imports(&root().join("coordinator/src"));
    let mut problems = Vec::new();
    for (file, targets) in &graph {
        for target in targets {
            for (part, allowed) in MAY_IMPORT_ONLY {
                if file.starts_with(part) && !allowed.iter().any(|a| target.starts_with(a)) {
                    problems.push(format!("coordinator/src/{file} imports {target}; {part} may import only {allowed:?}"));
                }
            }
            for (part, denied) in MAY_NOT_IMPORT {
                if file.starts_with(part) && denied.iter().any(|d| target.starts_with(d)) {
                    problems.push(format!("coordinator/src/{file} imports {target}; {part} may not import {denied:?}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The rules name parts that exist (a rename does not turn them off).
    for (part, _) in MAY_IMPORT_ONLY.iter().chain(MAY_NOT_IMPORT) {
        assert!(graph.keys().any(|f| f.starts_with(part)), "no coordinator/src/{part}");
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [("a.rs", &["b.rs"][..]), ("b.rs", &["c.rs"]), ("c.rs", &["a.rs"]), ("d.rs", &["a.rs"])]
        .iter()
        .map(|(f, to)| (f.to_string(), to.iter().map(|t| t.to_string()).collect()))
        .collect();
    let expected: BTreeSet<String> = ["a.rs", "b.rs", "c.rs"].iter().map(|s| s.to_string()).collect();
    assert_eq!(cycles(&graph), vec![expected]);
}

#[test]
fn imports_are_read_from_paths_braces_and_child_modules() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(src.join("a/mod.rs"), "mod x;\nmod y;\npub use x::X;\nuse y::helper;\n").unwrap();
    std::fs::write(src.join("a/x.rs"), "use super::{y::Y, Z};\n// use crate::b::B;\n").unwrap();
    std::fs::write(src.join("a/y.rs"), "pub fn helper() { crate::b::run(); }\n#[cfg(test)]\nmod tests { use crate::a::x::X; }\n").unwrap();
    std::fs::write(src.join("b.rs"), "use crate::a::{self};\n").unwrap();
    let graph = imports(src);
    let to = |f: &str| graph[f].iter().cloned().collect::<Vec<_>>();
    assert_eq!(to("a/mod.rs"), vec!["a/y.rs"]);
    assert_eq!(to("a/x.rs"), vec!["a/mod.rs", "a/y.rs"]);
    assert_eq!(to("a/y.rs"), vec!["b.rs"]);
    assert_eq!(to("b.rs"), vec!["a/mod.rs"]);
    assert_eq!(cycles(&graph), vec![["a/mod.rs", "a/y.rs", "b.rs"].iter().map(|s| s.to_string()).collect::<BTreeSet<_>>()]);
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The text before `#[cfg(test)]`, without `//` comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The module path of a file under `src` (`a/b.rs` and `a/b/mod.rs` are `a::b`).
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file.trim_end_matches(".rs").split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

fn is_root(file: &str) -> bool {
    file.ends_with("mod.rs") || file == "lib.rs" || file == "main.rs"
}

/// Each file's imports of the crate's other files.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files: Vec<String> = rust_files(src).iter().map(|p| p.strip_prefix(src).unwrap().to_string_lossy().replace('\\', "/")).collect();
    let modules: BTreeMap<Vec<String>, String> = files.iter().map(|f| (module_of(f), f.clone())).collect();
    let resolve = |path: &[String]| (0..=path.len()).rev().find_map(|n| modules.get(&path[..n]).cloned());
    let mut graph = BTreeMap::new();
    for file in &files {
        let text = code(&std::fs::read_to_string(src.join(file)).unwrap());
        let me = module_of(file);
        let children: BTreeSet<String> = if is_root(file) { child_modules(&text) } else { BTreeSet::new() };
        let mut to = BTreeSet::new();
        for (start, head, rest) in paths(&text) {
            let base: Vec<String> = match head.as_str() {
                "crate" => Vec::new(),
                "super" => me[..me.len().saturating_sub(1)].to_vec(),
                child if children.contains(child) => {
                    let before = &text[..start];
                    let previous = before.trim_end();
                    // `pub use child::X` in a module root re-exports; a
                    // path inside another path (`x::child::`) is not ours.
                    if before.ends_with(':') || previous.ends_with("pub use") || previous.ends_with("pub(crate) use") {
                        continue;
                    }
                    let mut base = me.clone();
                    base.push(child.to_string());
                    base
                }
                _ => continue,
            };
            for tail in rest {
                let mut path = base.clone();
                path.extend(tail);
                if let Some(target) = resolve(&path) {
                    if &target != file {
                        to.insert(target);
                    }
                }
            }
        }
        graph.insert(file.clone(), to);
    }
    graph
}

/// `mod x;` declarations of a module root.
fn child_modules(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub(crate) ").or_else(|| l.strip_prefix("pub ")).unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(|m| m.trim().to_string())
        })
        .collect()
}

/// Every path in `text` that starts with an identifier followed by `::`:
/// (where it starts, its first segment, the segment lists it names, one per
/// item of a brace group).
fn paths(text: &str) -> Vec<(usize, String, Vec<Vec<String>>)> {
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !ident(bytes[i]) || (i > 0 && ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && ident(bytes[i]) {
            i += 1;
        }
        if !text[i..].starts_with("::") {
            continue;
        }
        let head = text[start..i].to_string();
        let (tails, end) = path_tail(text, i);
        out.push((start, head, tails));
        i = end.max(i + 1);
    }
    out
}

/// The segments after `at` (which points at `::`), expanding one level of
/// braces: `::a::{b, c::D}` is `[a, b]` and `[a, c, D]`.
fn path_tail(text: &str, mut at: usize) -> (Vec<Vec<String>>, usize) {
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut prefix = Vec::new();
    while text[at..].starts_with("::") {
        at += 2;
        if bytes.get(at) == Some(&b'{') {
            let close = text[at..].find('}').map(|c| at + c).unwrap_or(text.len());
            let group = &text[at + 1..close];
            let tails = group
                .split(',')
                .map(|item| {
                    let item = item.split(" as ").next().unwrap_or("").trim().trim_start_matches('{');
                    let mut path = prefix.clone();
                    if !item.is_empty() && item != "self" && item != "*" {
                        path.extend(item.split("::").map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
                    }
                    path
                })
                .collect();
            return (tails, close);
        }
        let start = at;
        while at < bytes.len() && ident(bytes[at]) {
            at += 1;
        }
        if start == at {
            break;
        }
        prefix.push(text[start..at].to_string());
    }
    (vec![prefix], at)
}

/// The strongly connected components of more than one file (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.out.push(component);
                }
            }
        }
    }
    let mut walk = Walk { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on_stack: BTreeSet::new(), out: Vec::new() };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.out.sort();
    walk.out
}
