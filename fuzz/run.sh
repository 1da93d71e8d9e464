#!/usr/bin/env bash
# Runs Tessera's fuzz targets with cargo fuzz (libFuzzer).
#
#   fuzz/run.sh TARGET|all [SECONDS] [extra libFuzzer flags]
#   fuzz/run.sh pack       minimize each corpus and store it for git
#
# Targets: sql, pg_messages, shard_requests. The corpus is fuzz/corpus/TARGET,
# unpacked on first use from fuzz/corpus/TARGET.tar.gz (the seeds of
# seeds.py and what earlier runs found, minimized); crashes go to
# fuzz/artifacts/TARGET.
set -euo pipefail
cd "$(dirname "$0")"
target="${1:?usage: fuzz/run.sh TARGET|all [SECONDS]}"
seconds="${2:-600}"
shift $(( $# < 2 ? $# : 2 ))

main_target="${CARGO_TARGET_DIR:-$HOME/.cache/tessera/target}"
export CARGO_TARGET_DIR="$HOME/.cache/tessera/fuzz-target"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

# Link the RocksDB library the main build compiled instead of compiling
# its C++ again (about 25 minutes on two cores).
if [ -z "${ROCKSDB_LIB_DIR:-}" ]; then
    lib=$(ls -t "$main_target"/debug/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -1 || true)
    if [ -n "$lib" ]; then
        export ROCKSDB_LIB_DIR="$(dirname "$lib")" ROCKSDB_STATIC=1
    else
        echo "run.sh: no librocksdb.a under $main_target; RocksDB will be compiled (run ./dev.sh build first to avoid it)" >&2
    fi
fi

unpack() {
    local t="$1"
    if [ ! -d "corpus/$t" ] && [ -f "corpus/$t.tar.gz" ]; then
        mkdir -p "corpus/$t"
        tar -xzf "corpus/$t.tar.gz" -C "corpus/$t"
    fi
}

pack() {
    local t="$1"
    unpack "$t"
    cargo "${toolchain[@]}" fuzz cmin --sanitizer none "$t" "corpus/$t"
    tar -czf "corpus/$t.tar.gz" -C "corpus/$t" --sort=name --owner=0 --group=0 --mtime='2026-01-01' .
    echo "corpus/$t.tar.gz: $(ls "corpus/$t" | wc -l) inputs"
}

run() {
    local t="$1"
    shift
    unpack "$t"
    mkdir -p "corpus/$t" "artifacts/$t"
    cargo "${toolchain[@]}" fuzz run --sanitizer none "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=16384 -print_final_stats=1 "$@"
}

if [ "$target" = pack ]; then
    for t in sql pg_messages shard_requests; do pack "$t"; done
elif [ "$target" = all ]; then
    for t in sql pg_messages shard_requests; do run "$t" "$@"; done
else
    run "$target" "$@"
fi
