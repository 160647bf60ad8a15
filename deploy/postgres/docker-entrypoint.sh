#!/bin/sh
# Entry point of the postgres:15 image deploy/seed-images.sh makes from
# Debian's postgresql-15 package, for machines without a registry. It keeps
# the parts of the official image's behaviour docker-compose.yaml relies on:
#   - data in $PGDATA (/var/lib/postgresql/data, the volume), owned by the
#     postgres user; the server runs as postgres, never as root;
#   - on an empty data directory: initdb with superuser POSTGRES_USER
#     (default postgres) and password POSTGRES_PASSWORD (required),
#     password (scram-sha-256) logins over TCP from anywhere, trust over the
#     local socket; POSTGRES_DB (default: POSTGRES_USER) created; then every
#     /docker-entrypoint-initdb.d/*.sh (run if executable, else sourced) and
#     *.sql, against a server listening on the socket only, so the health
#     check (TCP) fails until initialisation is over;
#   - `docker run IMAGE postgres -c name=value ...` passes server options.
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "error: the database is uninitialized and POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    POSTGRES_USER=${POSTGRES_USER:-postgres}
    POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
    export POSTGRES_USER POSTGRES_DB
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
            -c "CREATE DATABASE \"$POSTGRES_DB\"" >/dev/null
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case $f in
            *.sh)
                echo "docker-entrypoint.sh: running $f"
                # shellcheck disable=SC1090  # the init scripts are the user's
                if [ -x "$f" ]; then "$f"; else . "$f"; fi
                ;;
            *.sql)
                echo "docker-entrypoint.sh: running $f"
                psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$f"
                ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "docker-entrypoint.sh: database initialised"
fi

exec "$@"
