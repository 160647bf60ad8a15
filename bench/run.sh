#!/usr/bin/env bash
# Benchmarks frontend-proxy side by side with HAProxy and nginx on loopback
# and writes bench/RESULTS.md and bench/results.png (method: bench/bench.py).
#
#   bench/run.sh                 full run (about 4 minutes after the build;
#                                about 9.5 minutes from a clean clone on 2 cores)
#   bench/run.sh --quick         smoke run for CI (about 1 minute after the build)
#   bench/run.sh --install-oha   also `cargo install oha` (open-loop latency; ~5 min build)
#   bench/run.sh --no-build      use the existing release binary
# Other flags go to bench/bench.py (--scenarios ace, --rounds N, --duration S,
# --variant NAME=PATH to A/B two frontend-proxy builds, --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
install_oha=0
args=()
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        --install-oha) install_oha=1 ;;
        *) args+=("$a") ;;
    esac
done

log() { echo "[run.sh $(date +%H:%M:%S)] $*" >&2; }

# Debian packages: the load generator, the two proxies we compare with, taskset,
# valgrind (instructions per request, a count machine noise does not move).
need=()
for pair in wrk:wrk nginx:nginx-light haproxy:haproxy taskset:util-linux python3:python3 valgrind:valgrind h2load:nghttp2-client openssl:openssl; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -q || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
# The packaged nginx/haproxy services are not wanted: the harness starts its own.
for svc in nginx haproxy; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        log "note: a system $svc service is running; the harness uses its own ports and instances"
    fi
done

# The chart: matplotlib from PyPI, else Debian's; the report is written without it.
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib"
    python3 -m pip install --quiet matplotlib 2>/dev/null \
        || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-matplotlib \
        || log "matplotlib unavailable: RESULTS.md will have no chart"
fi

if [ "$install_oha" = 1 ] && ! command -v oha >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/oha" ]; then
    log "cargo install oha (open-loop load generator)"
    cargo install oha --locked
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ "$build" = 1 ]; then
    log "building frontend-proxy (release) in $CARGO_TARGET_DIR"
    # The three programs together, as deploy/seed-images.sh builds them: the
    # dependencies' features are unified over the packages built, so
    # `-p frontend-proxy` alone would rebuild much of what verify.sh just
    # built (CI runs both), and would not be the binary the images carry.
    cargo build --release --locked --bins -p frontend-proxy -p film-service -p rating-service
    # Scenario (k)'s gRPC backend: a tonic server in a workspace of its own
    # (bench/grpc-backend/Cargo.toml says why); tonic and tokio only.
    log "building bench/grpc-backend (release)"
    cargo build --release --locked --manifest-path bench/grpc-backend/Cargo.toml
fi
binary="$CARGO_TARGET_DIR/release/frontend-proxy"
[ -x "$binary" ] || { echo "no binary at $binary" >&2; exit 1; }
# Without it (--no-build before it was ever built) only scenario (k) refuses to run.
grpc_backend="$CARGO_TARGET_DIR/release/grpc-backend"
[ -x "$grpc_backend" ] && args=(--grpc-backend "$grpc_backend" "${args[@]}")

# 1000 connections through a proxy need ~2000 descriptors per process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

exec python3 bench/bench.py --binary "$binary" "${args[@]}"
