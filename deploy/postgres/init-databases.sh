#!/bin/sh
# Database per service on the stack's one PostgreSQL server: a role and a
# database for film-service (films) and for rating-service (ratings). Each
# role owns its database and can connect to no other, so each service holds
# credentials for its own data only.
#
# Run once, when the data volume is empty, by the image's entry point
# (/docker-entrypoint-initdb.d/, as the official postgres image does) as
# POSTGRES_USER over the local socket. Passwords come from FILMS_DB_PASSWORD
# and RATINGS_DB_PASSWORD (docker-compose.yaml).
set -eu
: "${FILMS_DB_PASSWORD:?FILMS_DB_PASSWORD must be set}"
: "${RATINGS_DB_PASSWORD:?RATINGS_DB_PASSWORD must be set}"
psql -v ON_ERROR_STOP=1 --no-password --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
    -v films_password="$FILMS_DB_PASSWORD" -v ratings_password="$RATINGS_DB_PASSWORD" <<'SQL'
CREATE ROLE films LOGIN PASSWORD :'films_password';
CREATE DATABASE films OWNER films;
REVOKE ALL ON DATABASE films FROM PUBLIC;
CREATE ROLE ratings LOGIN PASSWORD :'ratings_password';
CREATE DATABASE ratings OWNER ratings;
REVOKE ALL ON DATABASE ratings FROM PUBLIC;
SQL
