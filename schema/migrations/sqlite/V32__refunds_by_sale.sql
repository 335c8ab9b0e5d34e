-- The refunds' roll-ups keep the quarter hour of the payments refunded, so that a
-- settlement entity's statement counts a refund against the entity of its sale's day: a
-- canteen that moved to a new contractor does not charge the new one for the old one's
-- sales ("Settlement entities"). Rows rolled up before this keep -1 (unknown): all of days
-- before this release, when every merchant settled to its tenant. A key of a WITHOUT ROWID
-- table cannot change in place: the table is copied once, at the first start.
CREATE TABLE report_refunds_v32 (
    tenant_id   TEXT NOT NULL,
    bucket      BIGINT NOT NULL,
    merchant_id TEXT NOT NULL,
    refunds     BIGINT NOT NULL,
    amount      BIGINT NOT NULL,
    sale_bucket BIGINT NOT NULL DEFAULT -1,
    PRIMARY KEY (tenant_id, bucket, merchant_id, sale_bucket)
) WITHOUT ROWID;
INSERT INTO report_refunds_v32 (tenant_id, bucket, merchant_id, refunds, amount)
    SELECT tenant_id, bucket, merchant_id, refunds, amount FROM report_refunds;
DROP TABLE report_refunds;
ALTER TABLE report_refunds_v32 RENAME TO report_refunds;
