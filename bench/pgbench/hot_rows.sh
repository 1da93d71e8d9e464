#!/usr/bin/env bash
# Hot rows: 16 clients move money among the same 10 accounts (spread over
# three shard groups on Tessera, so most transfers are two-phase commits),
# each transfer a transaction, with no retries. Prints commits per second
# and the fraction of transactions that failed, for PostgreSQL and Tessera
# in one run.
#
#   bench/pgbench/hot_rows.sh
#   CLIENTS=8 DURATION=10 bench/pgbench/hot_rows.sh
set -euo pipefail
cd "$(dirname "$0")"
ACCOUNTS=10 MAX_TRIES=1 CLIENTS="${CLIENTS:-16}" DURATION="${DURATION:-20}" exec ./compare.sh
