#!/usr/bin/env bash
# Benchmarks film-service and rating-service on PostgreSQL (5 replicas each)
# and on SQLite (1 each), through frontend-proxy, and writes the
# "Services on a database" section of bench/RESULTS.md (method:
# bench/services.py). About 3 minutes after the build.
#
#   bench/services.sh                     release build, then the run
#   bench/services.sh --no-build          use the existing release binaries
# Other flags go to bench/services.py (--duration S, --rows N, --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
args=()
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        *) args+=("$a") ;;
    esac
done

need=()
for pair in wrk:wrk psql:postgresql python3:python3; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ "$build" = 1 ]; then
    cargo build --release --locked -p frontend-proxy -p film-service -p rating-service
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 bench/services.py --bin-dir "$CARGO_TARGET_DIR/release" "${args[@]}"
