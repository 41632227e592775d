#!/usr/bin/env bash
# Install (if needed) and start a local PostgreSQL server for sweeper's Optuna storage tests.
#
#   export SWEEPER_TEST_POSTGRES_URL=$(bash scripts/postgres.sh)
#
# Idempotent: it installs PostgreSQL from Debian's packages only when it is missing, creates the
# cluster only when there is none, starts it only when it is down, and creates the `sweeper`
# role and database only when they are missing. Meant to run as root (CI does); a non-root user
# can still run it once the server is up, and just gets the URL back.
#
# stdout carries ONLY the SQLAlchemy URL; every other line goes to stderr.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=sweeper
PG_PASSWORD=sweeper
PG_DB=sweeper
PG_CLUSTER=main
MIN_MAX_CONNECTIONS=50 # ~10 concurrent workers, each with a small SQLAlchemy pool
WAIT_SECONDS=30
URL="postgresql+psycopg://${PG_USER}:${PG_PASSWORD}@${PG_HOST}:${PG_PORT}/${PG_DB}"

# Everything below writes to stderr; fd 3 keeps the real stdout for the URL. Every command that
# may leave a daemon behind (apt's postinst, pg_ctlcluster) runs with fd 3 closed: a server that
# inherited it would hold the caller's `$(bash scripts/postgres.sh)` open forever.
exec 3>&1 1>&2

log() { printf '[postgres.sh] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}
emit_url() { printf '%s\n' "$URL" >&3; }

# Can the sweeper role log in over TCP already? (psql may not be installed yet.)
sweeper_can_connect() {
    command -v psql >/dev/null 2>&1 || return 1
    PGPASSWORD="$PG_PASSWORD" PGCONNECT_TIMEOUT=3 psql -h "$PG_HOST" -p "$PG_PORT" \
        -U "$PG_USER" -d "$PG_DB" -XtAqc 'SELECT 1' >/dev/null 2>&1
}

max_connections_ok() {
    local n
    n=$(PGPASSWORD="$PG_PASSWORD" psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" \
        -XtAqc 'SHOW max_connections' 2>/dev/null) || return 1
    [[ "$n" =~ ^[0-9]+$ ]] && ((n >= MIN_MAX_CONNECTIONS))
}

# The role may create roles (the tests make one of their own, with a password no other string
# holds, to check it is stored and printed nowhere: tests/study/test_source_of_truth.py).
can_create_roles() {
    [[ "$(PGPASSWORD="$PG_PASSWORD" psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" \
        -XtAqc "SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user" 2>/dev/null)" == t ]]
}

# Fast path: everything is already set up and running -> a no-op that prints the URL.
if sweeper_can_connect && max_connections_ok && can_create_roles; then
    log "server already running on ${PG_HOST}:${PG_PORT}, role and database present"
    emit_url
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    die "PostgreSQL is not ready at ${PG_HOST}:${PG_PORT}; run this script as root to install/start it"
fi

# --- 1. install --------------------------------------------------------------------------------
pg_bin_dirs() { compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V || true; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v pg_isready >/dev/null 2>&1 \
    || ! command -v psql >/dev/null 2>&1 || [[ -z "$(pg_bin_dirs)" ]]; then
    log "installing PostgreSQL from Debian packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 3>&-
fi

# Highest installed major version, e.g. 15 for /usr/lib/postgresql/15/bin/postgres.
PG_VERSION=$(pg_bin_dirs | tail -n 1 | awk -F/ '{print $5}')
[[ -n "$PG_VERSION" ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
log "PostgreSQL major version ${PG_VERSION}"

# --- 2. cluster --------------------------------------------------------------------------------
if ! pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" \
    '$1 == v && $2 == c {found=1} END {exit !found}'; then
    log "creating cluster ${PG_VERSION}/${PG_CLUSTER} on port ${PG_PORT}"
    pg_createcluster --port "$PG_PORT" "$PG_VERSION" "$PG_CLUSTER" >&2 3>&-
fi

conf_get() { pg_conftool -s "$PG_VERSION" "$PG_CLUSTER" show "$1" 2>/dev/null || true; }

needs_restart=0
port=$(conf_get port)
if [[ "$port" != "$PG_PORT" ]]; then
    log "setting port = ${PG_PORT} (was '${port:-unset}')"
    pg_conftool "$PG_VERSION" "$PG_CLUSTER" set port "$PG_PORT"
    needs_restart=1
fi
listen=$(conf_get listen_addresses)
if [[ -n "$listen" && "$listen" != *localhost* && "$listen" != *127.0.0.1* && "$listen" != *'*'* ]]; then
    log "setting listen_addresses = 'localhost' (was '${listen}')"
    pg_conftool "$PG_VERSION" "$PG_CLUSTER" set listen_addresses localhost
    needs_restart=1
fi
maxconn=$(conf_get max_connections)
if [[ -n "$maxconn" && "$maxconn" =~ ^[0-9]+$ ]] && ((maxconn < MIN_MAX_CONNECTIONS)); then
    log "raising max_connections to 100 (was ${maxconn})"
    pg_conftool "$PG_VERSION" "$PG_CLUSTER" set max_connections 100
    needs_restart=1
fi

# --- 3. start ----------------------------------------------------------------------------------
cluster_online() {
    pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" \
        '$1 == v && $2 == c && $4 ~ /^online/ {found=1} END {exit !found}'
}

show_log_tail() {
    local f="/var/log/postgresql/postgresql-${PG_VERSION}-${PG_CLUSTER}.log"
    [[ -r "$f" ]] && { log "last lines of $f:"; tail -n 30 "$f" >&2; }
    return 0
}

if cluster_online; then
    if ((needs_restart)); then
        log "restarting cluster ${PG_VERSION}/${PG_CLUSTER} to apply settings"
        pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" restart >&2 3>&- || {
            show_log_tail
            die "restart failed"
        }
    else
        log "cluster ${PG_VERSION}/${PG_CLUSTER} is already running"
    fi
else
    log "starting cluster ${PG_VERSION}/${PG_CLUSTER}"
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start >&2 3>&- || {
        show_log_tail
        die "pg_ctlcluster ${PG_VERSION} ${PG_CLUSTER} start failed"
    }
fi

log "waiting for ${PG_HOST}:${PG_PORT} to accept connections (up to ${WAIT_SECONDS}s)"
ready=0
for ((i = 0; i < WAIT_SECONDS; i++)); do
    if pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
        ready=1
        break
    fi
    sleep 1
done
if ((!ready)); then
    show_log_tail
    die "server did not become ready on ${PG_HOST}:${PG_PORT} within ${WAIT_SECONDS}s"
fi

# --- 4. role and database ----------------------------------------------------------------------
# Run psql as the postgres superuser over the local socket (peer auth); cd / so that psql does not
# complain about a working directory the postgres user cannot read.
as_postgres_psql() {
    (cd / && runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres -tAq "$@")
}

if [[ "$(as_postgres_psql -c "SELECT 1 FROM pg_roles WHERE rolname = '${PG_USER}'")" != 1 ]]; then
    log "creating role ${PG_USER}"
    as_postgres_psql -c "CREATE ROLE ${PG_USER} LOGIN CREATEDB CREATEROLE PASSWORD '${PG_PASSWORD}'"
fi
as_postgres_psql -c "ALTER ROLE ${PG_USER} CREATEDB CREATEROLE"
if [[ "$(as_postgres_psql -c "SELECT 1 FROM pg_database WHERE datname = '${PG_DB}'")" != 1 ]]; then
    log "creating database ${PG_DB} owned by ${PG_USER}"
    as_postgres_psql -c "CREATE DATABASE ${PG_DB} OWNER ${PG_USER}"
fi

if ! sweeper_can_connect; then
    # The role existed but with another password or without LOGIN: put it right.
    log "resetting login and password of role ${PG_USER}"
    as_postgres_psql -c "ALTER ROLE ${PG_USER} WITH LOGIN PASSWORD '${PG_PASSWORD}'"
    sweeper_can_connect || die "cannot connect as ${PG_USER} to ${PG_HOST}:${PG_PORT}/${PG_DB}"
fi

log "ready: max_connections = $(as_postgres_psql -c 'SHOW max_connections')"
emit_url
