#!/usr/bin/env sh
# Writes a self-signed certificate for the demo TLS listener (8443).
# Never commit the result; bring your own by putting cert.pem/key.pem in
# the target directory (or pointing the bootstrap's tls_certificates at them).
# Usage: conf/gen-cert.sh [DIR]   (default: conf/tls)
set -eu
dir=${1:-$(dirname "$0")/tls}
mkdir -p "$dir"
if [ -s "$dir/cert.pem" ] && [ -s "$dir/key.pem" ]; then
    echo "$dir/cert.pem exists; keeping it"
    exit 0
fi
openssl req -x509 -newkey rsa:2048 -nodes -days 365 \
    -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,DNS:frontend-proxy,IP:127.0.0.1" \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
chmod 600 "$dir/key.pem"
echo "wrote $dir/cert.pem and $dir/key.pem"
