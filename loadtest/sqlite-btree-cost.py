#!/usr/bin/env python3
"""What a B-tree written per payment costs SQLite (docs/BENCHMARKS.md, thirty-ninth run).

Inserts rows shaped like the writer's (one statement a row, 20 payments or 40 ledger entries
a transaction, WAL, UUIDv7 payment ids, random cardholders) into tables that differ only in
their keys, alternating, and prints the process CPU per row. Python's own SQLite and
`synchronous=OFF`: the figure is the statements' CPU, not the disk's; compare the columns
of one line, not against the server.

Run: python3 loadtest/sqlite-btree-cost.py [rounds]
"""
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid

PAYMENT_COLS = """tenant_id TEXT NOT NULL, user_id TEXT, merchant_id TEXT NOT NULL,
    terminal_id TEXT NOT NULL, amount BIGINT NOT NULL, status TEXT NOT NULL, decline_reason TEXT,
    coupon_id TEXT, coupon_amount BIGINT NOT NULL, subsidy_amount BIGINT NOT NULL,
    balance_amount BIGINT NOT NULL, deferred_amount BIGINT NOT NULL, subsidy_parts TEXT NOT NULL,
    refunded BIGINT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL"""
LEDGER_COLS = """tenant_id TEXT NOT NULL, tx_id TEXT NOT NULL, account TEXT NOT NULL, ref_id TEXT,
    amount BIGINT NOT NULL, payment_id TEXT, created_at INTEGER NOT NULL"""

# Before and after SQLite migration V8.
PAYMENTS = {
    "payments keyed by id, tenant index": (
        [f"CREATE TABLE payments (id TEXT PRIMARY KEY, {PAYMENT_COLS})",
         "CREATE INDEX payments_tenant ON payments (tenant_id, id)"],
        "id"),
    "payments keyed by (tenant_id, id)": (
        [f"CREATE TABLE payments (id TEXT NOT NULL, {PAYMENT_COLS}, PRIMARY KEY (tenant_id, id))"],
        "tenant_id, id"),
}
LEDGER = {
    "ledger AUTOINCREMENT": f"CREATE TABLE ledger_entries (id INTEGER PRIMARY KEY AUTOINCREMENT, {LEDGER_COLS})",
    "ledger INTEGER PRIMARY KEY": f"CREATE TABLE ledger_entries (id INTEGER PRIMARY KEY, {LEDGER_COLS})",
}


def uuid7():
    ms = int(time.time() * 1000)
    r = random.getrandbits(74)
    return str(uuid.UUID(int=(ms << 80) | (0x7 << 76) | ((r >> 62) << 64) | (0b10 << 62) | (r & ((1 << 62) - 1))))


def timed(ddl, sql, rows, per_tx):
    with tempfile.TemporaryDirectory() as d:
        c = sqlite3.connect(os.path.join(d, "t.db"), isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=OFF")
        for s in ddl:
            c.execute(s)
        start = time.process_time()
        for i in range(0, len(rows), per_tx):
            c.execute("BEGIN")
            for r in rows[i:i + per_tx]:
                c.execute(sql, r)
            c.execute("COMMIT")
        spent = time.process_time() - start
        c.close()
        return spent / len(rows) * 1e6


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    tenant, merchant = str(uuid.uuid4()), str(uuid.uuid4())
    users = [str(uuid.uuid4()) for _ in range(10_000)]
    payments = [(uuid7(), tenant, random.choice(users), merchant, merchant, 100, "succeeded", None, None,
                 0, 0, 100, 0, "[]", 0, i, i) for i in range(100_000)]
    entries = [(tenant, uuid7(), "cash", random.choice(users), 100, None, i) for i in range(200_000)]
    for n in range(1, rounds + 1):
        line = []
        for name, (ddl, target) in PAYMENTS.items():
            sql = (f"INSERT INTO payments VALUES ({','.join('?' * 17)}) "
                   f"ON CONFLICT ({target}) DO UPDATE SET status = excluded.status")
            line.append(f"{name}: {timed(ddl, sql, payments, 20):.2f}")
        for name, ddl in LEDGER.items():
            sql = ("INSERT INTO ledger_entries (tenant_id, tx_id, account, ref_id, amount, payment_id, "
                   "created_at) VALUES (?,?,?,?,?,?,?)")
            line.append(f"{name}: {timed([ddl], sql, entries, 40):.2f}")
        print(f"round {n} (µs a row)  " + "  ".join(line), flush=True)


if __name__ == "__main__":
    main()
