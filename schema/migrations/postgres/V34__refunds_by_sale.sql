-- The refunds' roll-ups keep the quarter hour of the payments refunded, so that a
-- settlement entity's statement counts a refund against the entity of its sale's day: a
-- canteen that moved to a new contractor does not charge the new one for the old one's
-- sales ("Settlement entities"). Rows rolled up before this keep -1 (unknown): all of days
-- before this release, when every merchant settled to its tenant. Nodes of the previous
-- release insert without the column and write -1; their reports do not read it.
ALTER TABLE report_refunds ADD COLUMN sale_bucket BIGINT NOT NULL DEFAULT -1;
ALTER TABLE report_refunds DROP CONSTRAINT report_refunds_pkey;
ALTER TABLE report_refunds ADD PRIMARY KEY (tenant_id, bucket, merchant_id, sale_bucket);
