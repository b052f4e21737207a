#!/usr/bin/env bash
# PostgreSQL insert-only yardstick: 100-byte rows, synchronous_commit on, one row per transaction.
#   PG_DURATION (s, default 20), PG_CLIENTS (default 16), PGHOST (default 127.0.0.1), PGDATABASE (test)
set -euo pipefail
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGDATABASE="${PGDATABASE:-test}"
export PGUSER="${PGUSER:-postgres}"
DURATION="${PG_DURATION:-20}"
CLIENTS="${PG_CLIENTS:-16}"
JOBS="$(nproc)"
script="$(mktemp --suffix=.sql)"
trap 'rm -f "$script"' EXIT
psql -q -v ON_ERROR_STOP=1 <<'SQL'
DROP TABLE IF EXISTS conclavium_bench;
CREATE TABLE conclavium_bench (id bigserial PRIMARY KEY, k text NOT NULL, v text NOT NULL);
SQL
# one transaction = one INSERT of a random 16-char key and a 100-byte value, committed synchronously
cat >"$script" <<'SQL'
INSERT INTO conclavium_bench (k, v) VALUES (md5(random()::text)::char(16), repeat(md5(random()::text), 4)::char(100));
SQL
echo "postgres: $(psql -Atc 'select version()')"
echo "synchronous_commit=$(PGOPTIONS='-c synchronous_commit=on' psql -Atc 'show synchronous_commit') fsync=$(psql -Atc 'show fsync')"
PGOPTIONS='-c synchronous_commit=on' pgbench -n -M prepared -c "$CLIENTS" -j "$JOBS" -T "$DURATION" -f "$script"
psql -q -c 'DROP TABLE conclavium_bench'
