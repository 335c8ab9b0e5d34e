-- The outbox holds one row per transaction, a page of its events in order, instead of one
-- row per event: a group commit of ~20 payments wrote 20 outbox rows with two index entries
-- each, and deleted them again; now it writes and deletes one (docs/BENCHMARKS.md). A
-- page's key is the id of its first event.
CREATE TABLE outbox_pages (
    id         TEXT PRIMARY KEY,
    -- When its first event was made (ms); the relay's sweep takes pages older than a few
    -- seconds.
    created_at INTEGER NOT NULL,
    -- [{"payload": …, "id", "tenant_id", "topics", "kind", "at" (µs since the epoch)}, …]
    events     TEXT NOT NULL
);
CREATE INDEX outbox_pages_created ON outbox_pages (created_at);

-- Events not relayed yet when the server stopped for the upgrade: a page each.
INSERT INTO outbox_pages (id, created_at, events)
SELECT id, created_at, json_array(json_object(
           'payload', json(payload), 'id', id, 'tenant_id', tenant_id, 'topics', json(topics),
           'kind', kind, 'at', created_at * 1000))
FROM outbox
WHERE published_at IS NULL;

DROP TABLE outbox;
