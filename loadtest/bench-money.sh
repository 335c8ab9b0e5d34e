#!/usr/bin/env bash
# One side-by-side run of the money benchmarks (docs/BENCHMARKS.md). Needs PostgreSQL at
# $PG (default: the local test server). Loader and server share this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=${PG:-postgres://postgres@127.0.0.1:5432/test}
BASE=${PG%/*}
fresh() { psql "$PG" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"; }
cargo build --release -q -p onecard -p onecard-loadtest
LT=./target/release/loadtest
BIN=target/release/onecard
echo "== healthz ceiling"; $LT healthz --spawn $BIN --connections 64 --seconds 10
echo "== pay, SQLite";       $LT pay --spawn $BIN
echo "== pay, SQLite, hot";  $LT pay --spawn $BIN --hot
fresh onecard_bench_pay;     echo "== pay, PostgreSQL"
$LT pay --spawn $BIN --database-url "$BASE/onecard_bench_pay"
fresh onecard_bench_hot;     echo "== pay, PostgreSQL, hot"
$LT pay --spawn $BIN --database-url "$BASE/onecard_bench_hot" --hot
fresh onecard_bench_naive;   echo "== naive"
$LT naive --database-url "$BASE/onecard_bench_naive"
$LT naive --database-url "$BASE/onecard_bench_naive" --hot
