-- The retention purge on PostgreSQL (docs/BENCHMARKS.md, "Retention"): two tenants with a
-- million shuttle rides each over 400 days, then the purge statement of
-- schema/src/postgres_retention.rs at a 365-day limit, batch by batch, and once more with
-- nothing left. Run on a migrated scratch database.
\timing on
INSERT INTO shuttle_rides (id, tenant_id, route_id, bus_id, user_id, code_nonce, at)
SELECT (lpad(to_hex(ms), 12, '0') || '7' || substr(h,1,3) || '8' || substr(h,4,15))::uuid,
       CASE WHEN i % 2 = 0 THEN '01900000-0000-7000-8000-00000000000a'::uuid ELSE '01900000-0000-7000-8000-00000000000b'::uuid END,
       gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), decode(h, 'hex'),
       to_timestamp(ms / 1000.0)
FROM (SELECT i, md5(i::text) AS h,
             (extract(epoch FROM now()) * 1000)::bigint - (400::bigint * 86400000 * (2000000 - i) / 2000000) AS ms
      FROM generate_series(1, 2000000) i) s;
ANALYZE shuttle_rides;
SELECT count(*) FILTER (WHERE at < now() - interval '365 days') AS past, count(*) FROM shuttle_rides WHERE tenant_id = '01900000-0000-7000-8000-00000000000a';

PREPARE purge(uuid, uuid, timestamptz, bigint) AS
  DELETE FROM shuttle_rides WHERE id IN (SELECT id FROM shuttle_rides
  WHERE tenant_id = $1 AND id < $2 AND at < $3 ORDER BY id LIMIT $4);
SELECT (lpad(to_hex((extract(epoch FROM now() - interval '365 days') * 1000)::bigint), 12, '0') || '70008000000000000000')::uuid AS floor, now() - interval '365 days' AS cutoff \gset
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE purge('01900000-0000-7000-8000-00000000000a', :'floor', :'cutoff', 2000);
DO $$
DECLARE n bigint; total bigint := 0; batches int := 0; t0 timestamptz := clock_timestamp();
  floor uuid := (lpad(to_hex((extract(epoch FROM now() - interval '365 days') * 1000)::bigint), 12, '0') || '70008000000000000000')::uuid;
BEGIN
  LOOP
    DELETE FROM shuttle_rides WHERE id IN (SELECT id FROM shuttle_rides
      WHERE tenant_id = '01900000-0000-7000-8000-00000000000a' AND id < floor AND at < now() - interval '365 days' ORDER BY id LIMIT 2000);
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n; batches := batches + 1;
    EXIT WHEN n < 2000;
  END LOOP;
  RAISE NOTICE 'deleted % rows in % batches, % ms', total, batches, round(extract(epoch FROM clock_timestamp() - t0) * 1000);
END $$;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE purge('01900000-0000-7000-8000-00000000000a', :'floor', :'cutoff', 2000);
SELECT count(*) FROM shuttle_rides WHERE tenant_id = '01900000-0000-7000-8000-00000000000b';
