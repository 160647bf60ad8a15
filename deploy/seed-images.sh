#!/usr/bin/env bash
# Puts every image docker-compose.yaml names into the local Docker image
# cache, on a machine that cannot pull them (no registry, as in CI here), so
# that `docker compose up --no-build` runs the same compose file.
#
#   debian:bookworm-slim     pulled if possible; else debootstrap (minbase,
#                            plus ca-certificates) + docker import
#   prom/prometheus:v2.42.0  pulled if possible; else Debian's prometheus
#                            package (2.42) in a debootstrap rootfs, with the
#                            official image's entrypoint, user, flags and paths
#   postgres:15              pulled if possible; else Debian's postgresql-15
#                            in a debootstrap rootfs, with the official
#                            image's environment (POSTGRES_USER/PASSWORD/DB),
#                            data directory, init scripts and stop signal
#                            (deploy/postgres/seed.Dockerfile)
#   frontend-proxy:latest, film-service:latest, rating-service:latest
#                            `cargo build --release` on this host (Debian 12,
#                            so the same glibc as the image), laid out by
#                            deploy/stage-rootfs.sh on top of the `runtime`
#                            stage of each program's own Dockerfile
#                            (deploy/prebuilt.Dockerfile): no Rust image needed
#
# Cached: an image that is present is kept (delete it to rebuild it); the
# debootstrap rootfs tarballs and .debs stay in SEED_CACHE_DIR, keyed by the
# recipe below, so a fresh machine bootstraps once and a re-run only rebuilds
# the programs (cargo and docker skip what has not changed).
#
# Usage: deploy/seed-images.sh [--no-pull]
#   --no-pull          do not try a registry first
# Environment:
#   CARGO_TARGET_DIR   cargo's target directory (default: <repo>/target)
#   SEED_CACHE_DIR     default /var/cache/frontend-proxy-ci
#   DEBIAN_MIRROR      default http://deb.debian.org/debian
# Needs: root (debootstrap), docker, cargo, openssl, debootstrap.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${SEED_CACHE_DIR:-/var/cache/frontend-proxy-ci}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
target_dir=${CARGO_TARGET_DIR:-$repo/target}
suite=bookworm
base_image=debian:bookworm-slim
prometheus_image=prom/prometheus:v2.42.0
postgres_image=postgres:15
programs=(frontend-proxy film-service rating-service)
binaries_image=frontend-proxy-seed-binaries:latest
pull=1

for arg in "$@"; do
    case $arg in
        --no-pull) pull=0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "seed-images.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

log() { printf '[seed] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
timed() {
    local what=$1 t0=$SECONDS
    shift
    "$@"
    log "$what: done in $((SECONDS - t0))s"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

try_pull() {
    [ "$pull" = 1 ] || return 1
    log "$1: trying the registry"
    if timeout 300 docker pull -q "$1" >/dev/null 2>&1; then
        log "$1: pulled"
        return 0
    fi
    log "$1: cannot be pulled; building it here"
    return 1
}

# Unmounts whatever debootstrap may have left mounted under $1 (it mounts
# /proc and /sys in the target), then deletes it without crossing mounts.
remove_dir() {
    local dir=$1 mnt
    [ -d "$dir" ] || return 0
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mnt; do
        umount -l "$mnt" 2>/dev/null || true
    done
    rm -rf --one-file-system "$dir"
}

work_dirs=()
cleanup() {
    local dir
    for dir in "${work_dirs[@]}"; do remove_dir "$dir"; done
}
trap cleanup EXIT

# What Debian's official slim images leave out, and what Docker provides at
# run time; applied to every rootfs.
slim_rootfs() {
    local root=$1
    cat > "$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
# No documentation or translations in a container image (as debian:*-slim).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
    find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
        "$root"/usr/share/lintian/*
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
        "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/var/log/apt/*
    # Package scripts never start services in a container (as the official images).
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    rm -f "$root/etc/apt/sources.list" "$root/etc/hostname"
    : > "$root/etc/resolv.conf"
    cat > "$root/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

prepare_base() { :; }

# The official prom/prometheus layout: /bin/prometheus (merged /usr), flags
# pointing at /usr/share/prometheus/console*, data in /prometheus, all
# usable by nobody. Debian keeps the consoles under /etc/prometheus.
prepare_prometheus() {
    local root=$1
    ln -sfn /etc/prometheus/console_libraries "$root/usr/share/prometheus/console_libraries"
    ln -sfn /etc/prometheus/consoles "$root/usr/share/prometheus/consoles"
    install -d -o 65534 -g 65534 "$root/prometheus"
    chown -R 65534:65534 "$root/etc/prometheus"
    # libjs-moment-timezone brings 210 MB of raw zone data besides the
    # bundled scripts the web UI loads.
    rm -rf "$root/usr/share/javascript/moment-timezone/data"
}

# Debian's package creates and registers a cluster of its own (15/main);
# the image's entry point makes one in $PGDATA instead.
prepare_postgres() {
    local root=$1
    rm -rf "$root/var/lib/postgresql/15/main" "$root/etc/postgresql/15"
}

# rootfs_tarball NAME PACKAGES PREPARE: sets $tarball to a cached tar of a
# debootstrapped bookworm with PACKAGES, made by it if missing. The cache key
# covers the suite, the packages and the recipe's code, so changing any of
# them bootstraps again.
rootfs_tarball() {
    local name=$1 packages=$2 prepare=$3 key work
    key=$(printf '%s\n' "$suite" "$packages" "$(declare -f slim_rootfs "$prepare")" | sha256sum | cut -c1-12)
    tarball=$cache/$name-$suite-$key.tar
    if [ -s "$tarball" ]; then
        log "$name: cached rootfs $tarball"
        return
    fi
    command -v debootstrap >/dev/null || die "debootstrap is needed (apt-get install debootstrap)"
    mkdir -p "$cache/debs"
    work=$(mktemp -d "$cache/work.XXXXXX")
    work_dirs+=("$work")
    log "$name: debootstrap --variant=minbase --include=$packages $suite (log: $work/debootstrap.log)"
    local t0=$SECONDS
    if ! debootstrap --variant=minbase --include="$packages" --cache-dir="$cache/debs" \
        "$suite" "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        die "$name: debootstrap failed"
    fi
    log "$name: debootstrap done in $((SECONDS - t0))s"
    slim_rootfs "$work/rootfs"
    "$prepare" "$work/rootfs"
    tar --numeric-owner -C "$work/rootfs" \
        --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' --exclude='./tmp/*' \
        -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    remove_dir "$work"
    # Tarballs of an older recipe are of no further use.
    find "$cache" -maxdepth 1 -name "$name-$suite-*.tar" ! -path "$tarball" -delete
}

seed_base() {
    have_image "$base_image" && { log "$base_image: present"; return; }
    try_pull "$base_image" && return
    rootfs_tarball debian-minbase "ca-certificates" prepare_base
    docker import -m "debootstrap --variant=minbase $suite (deploy/seed-images.sh)" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        "$tarball" "$base_image" >/dev/null
    log "$base_image: imported"
}

seed_prometheus() {
    have_image "$prometheus_image" && { log "$prometheus_image: present"; return; }
    try_pull "$prometheus_image" && return
    rootfs_tarball prometheus "prometheus" prepare_prometheus
    # The official image's configuration (docker-compose.yaml gives the
    # command explicitly, so both images run the same way).
    docker import -m "Debian $suite prometheus package (deploy/seed-images.sh)" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'USER nobody' \
        --change 'WORKDIR /prometheus' \
        --change 'EXPOSE 9090' \
        --change 'VOLUME ["/prometheus"]' \
        --change 'ENTRYPOINT ["/bin/prometheus"]' \
        --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.console.libraries=/usr/share/prometheus/console_libraries", "--web.console.templates=/usr/share/prometheus/consoles"]' \
        "$tarball" "$prometheus_image" >/dev/null
    log "$prometheus_image: imported ($(docker run --rm "$prometheus_image" --version 2>&1 | head -n 1))"
}

seed_postgres() {
    have_image "$postgres_image" && { log "$postgres_image: present"; return; }
    try_pull "$postgres_image" && return
    rootfs_tarball postgres "postgresql-15" prepare_postgres
    local rootfs=frontend-proxy-seed-postgres-rootfs:latest
    docker import -m "Debian $suite postgresql-15 package (deploy/seed-images.sh)" "$tarball" "$rootfs" >/dev/null
    quietly docker build -q -f "$repo/deploy/postgres/seed.Dockerfile" --build-arg ROOTFS="$rootfs" \
        -t "$postgres_image" "$repo/deploy/postgres"
    docker rmi "$rootfs" >/dev/null 2>&1 || true
    log "$postgres_image: built ($(docker run --rm --entrypoint postgres "$postgres_image" --version 2>&1 | head -n 1))"
}

build_programs() {
    # shellcheck disable=SC1091  # os-release is the machine's
    if [ "$(. /etc/os-release && echo "${VERSION_CODENAME:-}")" != "$suite" ]; then
        log "warning: this host is not Debian $suite; its binaries may need a newer glibc than the image has"
    fi
    local pkgs=()
    local p
    for p in "${programs[@]}"; do pkgs+=(-p "$p"); done
    (cd "$repo" && cargo build --release --locked --bins --target-dir "$target_dir" "${pkgs[@]}")
}

# Runs a command, showing its output only if it fails (docker build -q still
# prints the legacy builder's deprecation notice).
quietly() {
    local out
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" >&2
        die "failed: $*"
    fi
}

build_images() {
    local seed=$target_dir/docker-seed p old new runtime
    mkdir -p "$seed/context"
    sh "$repo/deploy/stage-rootfs.sh" "$target_dir/release" "$seed/out"
    # docker import keeps owners and modes (a COPY from the build context
    # would make every file root's, and the TLS key must be the proxy user's).
    tar --numeric-owner -C "$seed" -cf - out | docker import - "$binaries_image" >/dev/null
    for p in "${programs[@]}"; do
        old=$(docker image inspect -f '{{.Id}}' "$p:latest" 2>/dev/null || true)
        runtime=$p:runtime
        quietly docker build -q --target runtime -t "$runtime" -f "$repo/$p/Dockerfile" "$repo"
        quietly docker build -q -f "$repo/deploy/prebuilt.Dockerfile" \
            --build-arg RUNTIME="$runtime" --build-arg BINARIES="$binaries_image" --build-arg PROGRAM="$p" \
            --label "org.opencontainers.image.description=$p built on the host by deploy/seed-images.sh" \
            -t "$p:latest" "$seed/context"
        new=$(docker image inspect -f '{{.Id}}' "$p:latest")
        if [ -n "$old" ] && [ "$old" != "$new" ]; then
            docker rmi "$old" >/dev/null 2>&1 || true
        fi
        log "$p:latest: $(docker image inspect -f '{{.Size}}' "$p:latest" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
    done
    docker rmi "$binaries_image" >/dev/null
}

mkdir -p "$cache"
exec 9> "$cache/.lock"
flock -w 1800 9 || die "another seed-images.sh holds $cache/.lock"

t_all=$SECONDS
timed "base image $base_image" seed_base
timed "prometheus image $prometheus_image" seed_prometheus
timed "postgres image $postgres_image" seed_postgres
timed "cargo build --release" build_programs
timed "program images" build_images
log "all images ready in $((SECONDS - t_all))s: $base_image $prometheus_image $postgres_image ${programs[*]/%/:latest}"
