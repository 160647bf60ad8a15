#!/bin/sh
# Lays out, for each program, the files its image adds on top of the runtime
# stage of its Dockerfile: OUT/<program>/ mirrors the image's filesystem.
# Used by the Dockerfiles' builder stage (binaries built in Docker) and by
# deploy/seed-images.sh (binaries built on the host), so both paths produce
# the same files with the same owners and modes.
# Usage: stage-rootfs.sh BIN_DIR OUT     (BIN_DIR: cargo's target/release)
set -eu
bin_dir=$1
out=$2
conf=$(cd "$(dirname "$0")/../conf" && pwd)
# The non-root user of every image (see the runtime stage of the Dockerfiles).
runtime_uid=10001

for program in frontend-proxy film-service rating-service; do
    mkdir -p "$out/$program/usr/local/bin"
    install -m 0755 "$bin_dir/$program" "$out/$program/usr/local/bin/$program"
done

# The proxy also gets the stack's bootstrap (docker-compose.yaml mounts it
# again, so a user's own file can replace it) and a self-signed certificate
# for the TLS listener, made here and never committed. An existing one is
# kept, so a re-run does not change the image for nothing.
etc=$out/frontend-proxy/etc/frontend-proxy
mkdir -p "$etc"
install -m 0644 "$conf/frontend-proxy.yaml" "$etc/frontend-proxy.yaml"
sh "$conf/gen-cert.sh" "$etc/tls" >/dev/null
chmod 0644 "$etc/tls/cert.pem"
chmod 0600 "$etc/tls/key.pem"
chown -R "$runtime_uid:$runtime_uid" "$etc/tls"
