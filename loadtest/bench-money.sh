#!/usr/bin/env bash
# The side-by-side run of the money benchmarks (docs/BENCHMARKS.md). Needs PostgreSQL at
# $PG (default: the local test server). Loader and server share this machine.
#
# Runs $ROUNDS rounds (default 3). Each round measures every case once, back to back, so
# each round's ratios compare cases minutes apart; the hot and spread cases swap order
# from one round to the next. The summary prints every round's ratios and their median:
# this machine's speed drifts by ±15 % within minutes, and a single round can land a
# spread case in a fast minute and its hot case in a slow one.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=${PG:-postgres://postgres@127.0.0.1:5432/test}
ROUNDS=${ROUNDS:-3}
BASE=${PG%/*}
fresh() { psql "$PG" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"; }
# Every case starts from the same state: the earlier cases' dirty pages written out, and a
# fresh checkpoint cycle, so that no case inherits another's write-back or happens to be
# the one a timed checkpoint falls into.
settle() { psql "$PG" -qc CHECKPOINT; sync; }
cargo build --release -q -p onecard -p onecard-loadtest
# Where cargo put them (CARGO_TARGET_DIR, or ./target).
T=${CARGO_TARGET_DIR:-target}
LT=$T/release/loadtest
BIN=$T/release/onecard
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

# `pay` on one engine, spread over 8 stalls or (`hot`) with every till at one.
sqlite_pay() {
    local hot=; [ "$1" = hot ] && hot=--hot
    settle; echo "== pay, SQLite${hot:+, hot}"; $LT pay --spawn $BIN $hot
}
pg_pay() {
    local hot=; [ "$1" = hot ] && hot=--hot
    fresh "onecard_bench_$1"; settle; echo "== pay, PostgreSQL${hot:+, hot}"
    $LT pay --spawn $BIN --database-url "$BASE/onecard_bench_$1" $hot
}

for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then first=spread second=hot; else first=hot second=spread; fi
    {
        echo "#### round $round"
        settle; echo "== healthz ceiling"; $LT healthz --spawn $BIN --connections 64 --seconds 10
        sqlite_pay $first; sqlite_pay $second
        pg_pay $first; pg_pay $second
        fresh onecard_bench_naive; settle; echo "== naive"
        $LT naive --database-url "$BASE/onecard_bench_naive"
        $LT naive --database-url "$BASE/onecard_bench_naive" --hot
    } 2>&1 | tee -a "$LOG"
done

# The summary: one line per round, then the median of each column over the rounds.
awk -v rounds="$ROUNDS" '
function num(s, unit,   i, a, n) {
    # the number just before " unit" in s
    i = index(s, " " unit); if (!i) return ""
    s = substr(s, 1, i - 1); n = split(s, a, /[ =:(]/); return a[n] + 0
}
function p99(s,   i) { i = index(s, "p99 "); return substr(s, i + 4) + 0 }
# From a "CPU per ...: ..., loader N µs; the cores meanwhile: I % idle, S % stolen" line:
function loader(s) { return substr(s, index(s, "loader ") + 7) + 0 }
function steal(s,   i) { i = index(s, "% idle, "); return i ? sprintf("%.1f", substr(s, i + 8) + 0) : "?" }
function median(arr, n,   i, j, t, c) {
    for (i = 1; i <= n; i++) c[i] = arr[i]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (c[j] < c[i]) { t = c[i]; c[i] = c[j]; c[j] = t }
    return n % 2 ? c[(n + 1) / 2] : (c[n / 2] + c[n / 2 + 1]) / 2
}
/^#### round/ { r = $3 }
/^== /        { kase = substr($0, 4) }
/^healthz:/   { hz[r] = num($0, "req/s") }
/^pay( \(hot stall\))?: [0-9]+ payments in/ { rate[r, kase] = num($0, "payments/s"); q99[r, kase] = p99($0) }
/^CPU per payment:/ && kase ~ /^pay/ {
    ld[r, kase] = loader($0); st[r, kase] = steal($0)
}
/^naive: [0-9]+ clients:/       { nc = $2 + 0; hotrow = 0 }
/^naive \(hot row\): [0-9]+ clients:/ { hotrow = 1 }
/^  CPU per payment:/ && kase == "naive" && !hotrow {
    nld[r, nc] = loader($0); nst[r, nc] = steal($0)
}
/^naive best:/                 { nb[r] = num($0, "payments/s"); nbc[r] = $(NF - 1) + 0 }
/^naive \(hot row\): 64 clients:/ { nh[r] = num($0, "payments/s") }
END {
    printf "\n== summary (targets: PG/naive >= 1.5, SQLite/healthz >= 0.25, hot/spread >= 0.9, hot/naive hot >= 5, p99 <= 20 ms)\n"
    printf "%-7s %9s %9s %8s %8s %8s %8s %8s %8s %8s %8s %7s\n", "round", "PG/naive", "SQ/hz", "SQ h/s", "PG h/s", "SQ h/nh", "PG h/nh", "p99 SQ", "p99 SQh", "p99 PG", "p99 PGh", "p99 max"
    split("pay, SQLite|pay, SQLite, hot|pay, PostgreSQL|pay, PostgreSQL, hot", cases, "|")
    for (i = 1; i <= rounds; i++) {
        sq = rate[i, cases[1]]; sqh = rate[i, cases[2]]; pg = rate[i, cases[3]]; pgh = rate[i, cases[4]]
        a[1,i] = pg / nb[i]; a[2,i] = sq / hz[i]; a[3,i] = sqh / sq; a[4,i] = pgh / pg
        a[5,i] = sqh / nh[i]; a[6,i] = pgh / nh[i]; a[11,i] = 0
        for (k = 1; k <= 4; k++) { a[6 + k, i] = q99[i, cases[k]]; if (a[6 + k, i] > a[11,i]) a[11,i] = a[6 + k, i] }
        printf "%-7s %8.2fx %8.1f%% %7.2fx %7.2fx %7.1fx %7.1fx %8.2f %8.2f %8.2f %8.2f %7.2f\n", i, a[1,i], 100 * a[2,i], a[3,i], a[4,i], a[5,i], a[6,i], a[7,i], a[8,i], a[9,i], a[10,i], a[11,i]
    }
    for (k = 1; k <= 11; k++) { for (i = 1; i <= rounds; i++) col[i] = a[k,i]; med[k] = median(col, rounds) }
    printf "%-7s %8.2fx %8.1f%% %7.2fx %7.2fx %7.1fx %7.1fx %8.2f %8.2f %8.2f %8.2f %7.2f\n", "median", med[1], 100 * med[2], med[3], med[4], med[5], med[6], med[7], med[8], med[9], med[10], med[11]
    printf "\nThe loader does the same work in every pay case, so its CPU per payment shows how fast\nthe machine ran during each (µs; higher is slower), beside the share of the cores the\nhypervisor took (steal, %%); the naive peer'"'"'s loader does other work, so only its steal\ncompares:\n"
    printf "%-7s %12s %12s %12s %12s %12s\n", "round", "SQ", "SQ hot", "PG", "PG hot", "naive best"
    for (i = 1; i <= rounds; i++) {
        printf "%-7s", i
        for (k = 1; k <= 4; k++) printf " %12s", ld[i, cases[k]] " / " st[i, cases[k]]
        printf " %12s", nld[i, nbc[i]] " / " nst[i, nbc[i]]
        printf "\n"
    }
}' "$LOG"
