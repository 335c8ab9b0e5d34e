#!/usr/bin/env bash
# What one index entry costs PostgreSQL per payment (docs/BENCHMARKS.md, thirty-ninth run).
# Times batches of rows shaped like the group commit's (32 payments, or 64 ledger entries,
# per transaction, UUIDv7 payment ids, random cardholders) into tables that differ by one
# index, alternating, with `pgbench` at one client and `synchronous_commit=off` so that the
# figure is the inserts' CPU, not the disk.
# Run: loadtest/pg-index-cost.sh [postgres://postgres@127.0.0.1:5432/test] [rounds]
set -euo pipefail
PG=${1:-postgres://postgres@127.0.0.1:5432/test}
ROUNDS=${2:-3}
DB=onecard_index_cost
psql -q "$PG" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
URL="${PG%/*}/$DB"
psql -q "$URL" <<'SQL'
-- A UUIDv7 (time-ordered, as the server makes them) from a random UUID.
CREATE FUNCTION uuid7() RETURNS uuid VOLATILE LANGUAGE sql AS $$
  SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
         PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::int8) FROM 3)
         FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;
-- Payments as they are: a key on id, and (tenant_id, id) for the tenant's listing.
CREATE TABLE pay_id_key (id uuid PRIMARY KEY, tenant_id uuid NOT NULL, user_id uuid,
  merchant_id uuid NOT NULL, terminal_id uuid NOT NULL, amount int8 NOT NULL,
  status text NOT NULL, created_at timestamptz NOT NULL, pad text);
CREATE INDEX ON pay_id_key (tenant_id, id);
CREATE INDEX ON pay_id_key (user_id, id);
CREATE INDEX ON pay_id_key (merchant_id, created_at);
-- Payments keyed by (tenant_id, id): one index fewer.
CREATE TABLE pay_tenant_key (LIKE pay_id_key, PRIMARY KEY (tenant_id, id));
CREATE INDEX ON pay_tenant_key (user_id, id);
CREATE INDEX ON pay_tenant_key (merchant_id, created_at);
-- Ledger entries with a bigserial key, with the sequence alone, and with neither.
CREATE TABLE ledger_key (id bigserial PRIMARY KEY, tenant_id uuid NOT NULL, tx_id uuid NOT NULL,
  account text NOT NULL, ref_id uuid, amount int8 NOT NULL, payment_id uuid,
  created_at timestamptz NOT NULL);
CREATE TABLE ledger_sequence (id bigserial, tenant_id uuid NOT NULL, tx_id uuid NOT NULL,
  account text NOT NULL, ref_id uuid, amount int8 NOT NULL, payment_id uuid,
  created_at timestamptz NOT NULL);
CREATE TABLE ledger_bare (tenant_id uuid NOT NULL, tx_id uuid NOT NULL, account text NOT NULL,
  ref_id uuid, amount int8 NOT NULL, payment_id uuid, created_at timestamptz NOT NULL);
SQL
dir=$(mktemp -d)
trap 'rm -rf "$dir"; psql -q "$PG" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"' EXIT
T="'00000000-0000-0000-0000-000000000001'::uuid"
for t in pay_id_key pay_tenant_key; do
  echo "INSERT INTO $t SELECT uuid7(), $T, gen_random_uuid(), $T, $T, 100, 'succeeded', now(), repeat('x', 200) FROM generate_series(1, 32);" > "$dir/$t.sql"
done
for t in ledger_key ledger_sequence ledger_bare; do
  echo "INSERT INTO $t (tenant_id, tx_id, account, ref_id, amount, payment_id, created_at) SELECT $T, uuid7(), 'cash', gen_random_uuid(), 100, NULL, now() FROM generate_series(1, 64);" > "$dir/$t.sql"
done
for round in $(seq 1 "$ROUNDS"); do
  for t in pay_id_key pay_tenant_key ledger_key ledger_sequence ledger_bare; do
    psql -q "$URL" -c "TRUNCATE $t"
    ms=$(PGOPTIONS="-c synchronous_commit=off" pgbench -n -c 1 -t 4000 -f "$dir/$t.sql" "$URL" 2>/dev/null |
      awk '/latency average/ {print $4}')
    rows=32; [[ $t == ledger* ]] && rows=64
    echo "round $round  $t: $ms ms a transaction, $(awk -v m="$ms" -v r=$rows 'BEGIN {printf "%.2f", m * 1000 / r}') µs a row"
  done
done
