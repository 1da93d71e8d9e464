#!/usr/bin/env bash
# Tessera's entry point for people and CI.
#
#   ./dev.sh demo [ARGS]   start a whole cluster in one process and open the SQL shell
#   ./dev.sh test          build and run every test (unit and end-to-end)
#   ./dev.sh lint          rustfmt and clippy, as CI runs them
#   ./dev.sh build         build the tessera binary
#
# It installs what the build needs when it is missing (libclang for RocksDB's
# bindings; protoc comes vendored with the build) and keeps build output in a
# shared directory outside the clone, so RocksDB's C++ compiles only once.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# bindgen needs libclang itself (libclang.so or libclang-N.so); libclang-cpp,
# which some packages install alone, does not do.
have_libclang() {
    [ -n "${LIBCLANG_PATH:-}" ] && return 0
    ldconfig -p 2>/dev/null | grep -Eq '[[:space:]]libclang(-[0-9.]+)?\.so' && return 0
    compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null || compgen -G '/usr/lib/llvm-*/lib/libclang-[0-9]*.so*' >/dev/null
}

ensure_deps() {
    if ! command -v cargo >/dev/null; then
        echo "dev.sh: cargo is required (https://rustup.rs)" >&2
        exit 1
    fi
    local packages=()
    if ! have_libclang || ! command -v c++ >/dev/null; then
        echo "dev.sh: installing libclang and a C++ compiler for RocksDB's build" >&2
        packages+=(libclang-dev clang g++)
    fi
    if [ "${1:-}" = test ] && ! command -v psql >/dev/null; then
        echo "dev.sh: installing psql for the PostgreSQL protocol tests" >&2
        packages+=(postgresql-client)
    fi
    if [ ${#packages[@]} -gt 0 ]; then
        apt_install "${packages[@]}"
    fi
}

apt_install() {
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

cmd="${1:-help}"
[ $# -gt 0 ] && shift
case "$cmd" in
    demo)
        ensure_deps
        cargo build --quiet --bin tessera
        exec "$CARGO_TARGET_DIR/debug/tessera" demo "$@"
        ;;
    test)
        ensure_deps test
        cargo test --workspace "$@"
        ;;
    lint)
        ensure_deps
        cargo fmt --all --check
        cargo clippy --workspace --all-targets -- -D warnings
        ;;
    build)
        ensure_deps
        cargo build --bin tessera "$@"
        echo "$CARGO_TARGET_DIR/debug/tessera"
        ;;
    *)
        sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
        [ "$cmd" = help ] || exit 2
        ;;
esac
