#!/usr/bin/env bash
# Runs bench/pgbench/transfer.sql with pgbench against Tessera and against a
# local PostgreSQL with the same settings, one after the other in one run,
# and prints both figures and their ratio.
#
#   bench/pgbench/compare.sh            # 16 clients, 30 s each
#   CLIENTS=8 DURATION=10 bench/pgbench/compare.sh
#   ACCOUNTS=10 MAX_TRIES=1 bench/pgbench/compare.sh   # hot rows, no retries
#                                                     # (bench/pgbench/hot_rows.sh)
#
# MAX_TRIES (default 100) is pgbench's --max-tries: how often a transaction
# that fails with a serialization failure or deadlock (40001/40P01) is
# retried; with 1, the summary's "failed" column is the fraction of
# transactions that failed without a retry.
#
# Both commit durably: PostgreSQL with fsync = on and synchronous_commit =
# on; Tessera with three RocksDB shard processes that fsync every commit (a
# transfer between two groups is a two-phase commit with an fsynced
# decision). Both authenticate with SCRAM over TCP on loopback.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLIENTS="${CLIENTS:-16}"
DURATION="${DURATION:-30}"
ACCOUNTS="${ACCOUNTS:-3000}"
MAX_TRIES="${MAX_TRIES:-100}"
PGBIN="${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ] || [ ! -x "$PGBIN/pgbench" ]; then
    echo "compare.sh: installing PostgreSQL (server and pgbench) to compare against" >&2
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql postgresql-contrib >/dev/null
    PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi
PASSWORD="bench-password"
WORK="$(mktemp -d /tmp/tessera-pgbench.XXXXXX)"
chmod 755 "$WORK"
cleanup() {
    # start_node runs in command substitutions: its PIDs are in a file.
    for pid in $(cat "$WORK/pids" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    # Wait for them to exit before their data directories go.
    for pid in $(cat "$WORK/pids" 2>/dev/null); do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    if [ -f "$WORK/pg/postmaster.pid" ]; then as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# initdb and postgres refuse to run as root.
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts `tessera ARGS --listen 127.0.0.1:0`, waits for its address line.
start_node() {
    local name="$1"; shift
    "$TESSERA" "$@" --listen 127.0.0.1:0 >"$WORK/$name.out" 2>"$WORK/$name.log" &
    echo $! >>"$WORK/pids"
    for _ in $(seq 1 600); do
        if grep -q " listening on " "$WORK/$name.out" 2>/dev/null; then
            sed -n 's/.* listening on //p' "$WORK/$name.out" | head -1
            return
        fi
        sleep 0.1
    done
    echo "compare.sh: $name did not start; log:" >&2
    tail -5 "$WORK/$name.log" >&2
    exit 1
}

load_accounts() {
    python3 - "$ACCOUNTS" <<'PY'
import sys
n = int(sys.argv[1])
for lo in range(1, n + 1, 500):
    rows = ", ".join(f"({i}, 1000000)" for i in range(lo, min(lo + 500, n + 1)))
    print(f"INSERT INTO accounts VALUES {rows};")
PY
}

run_pgbench() {
    local label="$1" conninfo="$2"
    echo "== $label: pgbench -n -f transfer.sql -c $CLIENTS -j 2 -T $DURATION --max-tries=$MAX_TRIES" >&2
    PGPASSWORD="$PASSWORD" "$PGBIN/pgbench" -n -f bench/pgbench/transfer.sql -D accounts="$ACCOUNTS" \
        -c "$CLIENTS" -j 2 -T "$DURATION" --max-tries="$MAX_TRIES" "$conninfo" >"$WORK/$label.pgbench" 2>&1 || {
        cat "$WORK/$label.pgbench" >&2
        exit 1
    }
    grep -E "number of transactions actually processed|number of failed|number of transactions retried|latency average|^tps" "$WORK/$label.pgbench" >&2
    sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/$label.pgbench" | head -1
}

# ---- PostgreSQL ----
echo "$PASSWORD" >"$WORK/pwfile"
chmod 644 "$WORK/pwfile"
mkdir -p "$WORK/pg" "$WORK/pg-socket"
if [ "$(id -u)" -eq 0 ]; then chown postgres "$WORK/pg" "$WORK/pg-socket"; fi
as_postgres "$PGBIN/initdb" -D "$WORK/pg" -U bench --pwfile="$WORK/pwfile" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
PG_PORT="$(free_port)"
as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/server.log" -w \
    -o "-p $PG_PORT -k $WORK/pg-socket -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=100" start >/dev/null
PG_CONN="host=127.0.0.1 port=$PG_PORT user=bench dbname=postgres"
{
    echo "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL);"
    load_accounts
} | PGPASSWORD="$PASSWORD" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$PG_CONN" >/dev/null
PG_TPS="$(run_pgbench postgresql "$PG_CONN")"
as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null

# ---- Tessera: three shard processes and a coordinator ----
TESSERA="$(./dev.sh build 2>/dev/null | tail -1)"
export TESSERA_CLUSTER_SECRET="bench-cluster-secret-$RANDOM$RANDOM"
SHARDS=()
for i in 1 2 3; do
    SHARDS+=("--shard" "$i=$(start_node "shard-$i" shard --node-id "shard-$i" --data-dir "$WORK/shard-$i")")
done
VERIFIER="$(echo "$PASSWORD" | "$TESSERA" passwd)"
cat >"$WORK/coordinator.toml" <<TOML
pg_listen = "127.0.0.1:0"
[limits]
max_sessions = 1000
[[auth.users]]
name = "bench"
$VERIFIER
TOML
start_node coordinator coordinator --config "$WORK/coordinator.toml" --data-dir "$WORK/coordinator" "${SHARDS[@]}" >/dev/null
for _ in $(seq 1 100); do grep -q "postgres protocol on" "$WORK/coordinator.out" && break; sleep 0.1; done
PG_ADDR="$(sed -n 's/.*postgres protocol on //p' "$WORK/coordinator.out" | head -1)"
T_CONN="host=${PG_ADDR%:*} port=${PG_ADDR##*:} user=bench dbname=tessera sslmode=disable"
SPLIT1=$((ACCOUNTS / 3 + 1)); SPLIT2=$((2 * ACCOUNTS / 3 + 1))
{
    echo "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL) WITH (partitioning = 'range', split_points = '$SPLIT1,$SPLIT2');"
    load_accounts
} | PGPASSWORD="$PASSWORD" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$T_CONN" >/dev/null
T_TPS="$(run_pgbench tessera "$T_CONN")"
TOTAL="$(PGPASSWORD="$PASSWORD" "$PGBIN/psql" -X -A -t "$T_CONN" -c "SELECT sum(balance) FROM accounts")"

failed() {
    local f
    f="$(sed -n 's/^number of failed transactions: [0-9]* (\([0-9.]*\)%).*/\1/p' "$WORK/$1.pgbench" | head -1)"
    echo "${f:-0}"
}

echo
echo "transfer.sql, $CLIENTS clients, ${DURATION}s each, $ACCOUNTS accounts, --max-tries=$MAX_TRIES, durable commits on both:"
printf "  PostgreSQL %s (one node):              %10.1f TPS, %6s%% failed\n" "$("$PGBIN/postgres" --version | awk '{print $3}')" "$PG_TPS" "$(failed postgresql)"
printf "  Tessera (3 shard groups, 2PC across):  %10.1f TPS, %6s%% failed\n" "$T_TPS" "$(failed tessera)"
python3 -c "import sys; print(f'  Tessera / PostgreSQL = {float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$T_TPS" "$PG_TPS"
if [ "$TOTAL" != "$((ACCOUNTS * 1000000))" ]; then
    echo "compare.sh: Tessera's total is $TOTAL, expected $((ACCOUNTS * 1000000))" >&2
    exit 1
fi
