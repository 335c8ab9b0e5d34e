-- How PostgreSQL stores an outbox page (docs/BENCHMARKS.md, eighteenth run): 3,000 pages
-- of 16 payment events (~13 KB each) inserted into one (logged) table per storage choice, each
-- value made fresh (`|| ''`) so that it arrives uncompressed, as it does from the server.
-- Run: psql postgres://postgres@127.0.0.1:5432/test -f loadtest/pg-page-storage.sql
\timing on
DROP TABLE IF EXISTS json_pglz, json_lz4, text_pglz, text_lz4, text_lz4_main, text_external;
CREATE TEMP TABLE src AS
SELECT g, (SELECT '[' || string_agg(format(
    '{"payload":{"id":"%s","tenant_id":"%s","user_id":"%s","merchant_id":"%s","terminal_id":"%s",'
    '"amount":%s,"status":"succeeded","decline_reason":null,"coupon_id":null,"breakdown":{"coupon":0,'
    '"subsidy":0,"balance":%s,"deferred":0},"subsidy_parts":[],"refunded":0,'
    '"created_at":"2026-11-26T16:00:00.%sZ","updated_at":"2026-11-26T16:00:00.%sZ"},"id":"%s",'
    '"tenant_id":"%s","topics":["terminal:%s","user:%s","merchant:%s","tenant"],'
    '"kind":"payment.succeeded","at":%s}',
    gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), gen_random_uuid(),
    i * 7, i * 7, i, i, gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), gen_random_uuid(),
    gen_random_uuid(), 1764000000000000 + i), ',') || ']'
    FROM generate_series(1, 16) i WHERE g > 0) AS ev
FROM generate_series(1, 3000) g;
SELECT avg(length(ev))::int AS bytes_per_page FROM src;
CREATE TABLE json_pglz (id uuid PRIMARY KEY, created_at timestamptz NOT NULL, events json NOT NULL);
CREATE TABLE json_lz4 (id uuid PRIMARY KEY, created_at timestamptz NOT NULL, events json COMPRESSION lz4 NOT NULL);
CREATE TABLE text_pglz (id uuid PRIMARY KEY, created_at timestamptz NOT NULL, events text NOT NULL);
CREATE TABLE text_lz4 (id uuid PRIMARY KEY, created_at timestamptz NOT NULL, events text COMPRESSION lz4 NOT NULL);
CREATE TABLE text_lz4_main (id uuid PRIMARY KEY, created_at timestamptz NOT NULL, events text COMPRESSION lz4 NOT NULL);
ALTER TABLE text_lz4_main ALTER COLUMN events SET STORAGE MAIN;
CREATE TABLE text_external (id uuid PRIMARY KEY, created_at timestamptz NOT NULL, events text NOT NULL);
ALTER TABLE text_external ALTER COLUMN events SET STORAGE EXTERNAL;
\echo json, pglz (the first version of the page)
INSERT INTO json_pglz SELECT gen_random_uuid(), now(), (ev || '')::json FROM src;
\echo json, lz4
INSERT INTO json_lz4 SELECT gen_random_uuid(), now(), (ev || '')::json FROM src;
\echo text, pglz
INSERT INTO text_pglz SELECT gen_random_uuid(), now(), ev || '' FROM src;
\echo text, lz4
INSERT INTO text_lz4 SELECT gen_random_uuid(), now(), ev || '' FROM src;
\echo text, lz4, storage main (migration V6)
INSERT INTO text_lz4_main SELECT gen_random_uuid(), now(), ev || '' FROM src;
\echo text, not compressed
INSERT INTO text_external SELECT gen_random_uuid(), now(), ev || '' FROM src;
SELECT pg_size_pretty(pg_total_relation_size('text_pglz')) AS pglz_size,
       pg_size_pretty(pg_total_relation_size('text_lz4_main')) AS lz4_main_size,
       pg_size_pretty(pg_total_relation_size('text_external')) AS uncompressed_size;
DROP TABLE json_pglz, json_lz4, text_pglz, text_lz4, text_lz4_main, text_external;
