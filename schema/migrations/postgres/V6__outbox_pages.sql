-- The outbox holds one row per transaction, a page of its events in order, instead of one
-- row per event: a group commit of ~16 payments wrote 16 outbox rows with two index entries
-- each, and the relay deleted 16; now it writes one and the relay deletes one
-- (docs/BENCHMARKS.md). A page's key is the id of its first event.
CREATE TABLE outbox_pages (
    id         UUID PRIMARY KEY,
    -- When its first event was made; the relay's sweep takes pages older than a few seconds.
    created_at TIMESTAMPTZ NOT NULL,
    -- JSON: [{"payload": …, "id", "tenant_id", "topics", "kind", "at" (µs since the epoch)}, …].
    -- Text, not `json`: the writer made it, and `json` would parse all of it again.
    events     TEXT NOT NULL
);
CREATE INDEX outbox_pages_created ON outbox_pages (created_at);

-- A page of ~16 payment events is ~10 KB, over the size PostgreSQL compresses at. Its
-- default compression (pglz) cost ~230 µs more per page than lz4 (docs/BENCHMARKS.md), as
-- much as the rows a page saves; MAIN keeps a page inline when it fits once compressed.
ALTER TABLE outbox_pages ALTER COLUMN events SET STORAGE MAIN;
DO $$
BEGIN
    ALTER TABLE outbox_pages ALTER COLUMN events SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this PostgreSQL has no lz4: outbox pages use its default compression';
END
$$;

-- A queue, as the outbox was: vacuumed and analyzed by row count (V3).
ALTER TABLE outbox_pages SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 1000
);

-- The old table stays, for now. During a rolling update, nodes of the previous release
-- still write their events there after this migration has run (the migrate Job runs
-- before the rollout); their own relays delete them, and this release's relays sweep and
-- delete what a node left there when it stopped. A later release drops it.
