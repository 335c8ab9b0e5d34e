#!/usr/bin/env bash
# One run of the websocket benchmarks (docs/BENCHMARKS.md), SQLite, one node; loader and
# server share this machine. First the maximum payment rate, then `loadtest ws` at half
# of it. CONNECTIONS defaults to what this process may open (RLIMIT_NOFILE) minus head
# room, up to 50,000.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p onecard -p onecard-loadtest
# Where cargo put them (CARGO_TARGET_DIR, or ./target).
T=${CARGO_TARGET_DIR:-target}
LT=$T/release/loadtest
BIN=$T/release/onecard
limit=$(ulimit -Hn)
if [ -z "${CONNECTIONS:-}" ]; then
    CONNECTIONS=$(( limit - 1000 ))
    [ "$CONNECTIONS" -gt 50000 ] && CONNECTIONS=50000
fi
echo "== open-file limit (hard) $limit; holding $CONNECTIONS connections"
echo "== maximum payment rate, SQLite"
out=$($LT pay --spawn $BIN --payments 40000)
echo "$out"
max=$(echo "$out" | sed -n 's/.* = \([0-9]*\) payments\/s.*/\1/p')
rate=$(( max / 2 ))
echo "== websockets at half of $max payments/s = $rate payments/s"
$LT ws --spawn $BIN --connections "$CONNECTIONS" --rate "$rate" --seconds 10 \
    --dashboards 10000 --fanout-events 20
