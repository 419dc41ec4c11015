#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the store's tests and print its SQLAlchemy URL.
#
#   url=$(bash scripts/start-postgres.sh DATA_DIR [PORT])     stop: pg_ctl -D DATA_DIR stop
#
# Installs Debian's postgresql when no server is found (CI on a fresh machine). The server runs
# as the `postgres` user (it refuses root), listens on 127.0.0.1 only, trusts local connections,
# and keeps its data in DATA_DIR, which it creates.
set -euo pipefail
data=${1:?usage: start-postgres.sh DATA_DIR [PORT]}
port=${2:-55432}

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bindir" ]; then
  echo "winnow: installing PostgreSQL" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

run_as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

mkdir -p "$data"
if [ "$(id -u)" = 0 ]; then
  chown postgres "$data"
  chmod a+x "$(dirname "$data")"  # e.g. a mktemp -d parent (0700): postgres must pass through
fi
if [ ! -f "$data/PG_VERSION" ]; then
  run_as_postgres "$bindir/initdb" -D "$data" -U postgres -A trust >/dev/null
fi
run_as_postgres "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w \
  -o "-p $port -k $data -c listen_addresses=127.0.0.1" start >/dev/null
run_as_postgres "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres winnow_test 2>/dev/null || true
echo "postgresql+psycopg://postgres@127.0.0.1:$port/winnow_test"
