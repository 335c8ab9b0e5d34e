-- Report roll-ups (docs/OPERATIONS.md, "Financial reports"). A report reads every payment
-- of its period once, ~1 µs each: a year at a large site would outlast the request's
-- deadline. So the sums of each closed quarter hour (an hour past) are kept, per tenant,
-- by a background task on any node, and a report reads those for the part of its period
-- they cover and the payments themselves only for the rest (the last hour or so).
--
-- Per tenant: every quarter hour before `through` (milliseconds since the epoch divided by
-- 900,000) is summed in the three tables below, and none at or after it. A roll-up step
-- holds this row locked while it sums and adds one stretch, so two nodes never add the
-- same quarter hour twice.
CREATE TABLE report_rollups (
    tenant_id UUID PRIMARY KEY REFERENCES tenants (id),
    through   BIGINT NOT NULL
);

-- Sales (payments not declined) by terminal and quarter hour.
CREATE TABLE report_sales (
    tenant_id   UUID NOT NULL,
    bucket      BIGINT NOT NULL,
    merchant_id UUID NOT NULL,
    terminal_id UUID NOT NULL,
    payments    BIGINT NOT NULL,
    amount      BIGINT NOT NULL,
    coupon      BIGINT NOT NULL,
    subsidy     BIGINT NOT NULL,
    balance     BIGINT NOT NULL,
    deferred    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, bucket, merchant_id, terminal_id)
);

-- Refunds by merchant and quarter hour.
CREATE TABLE report_refunds (
    tenant_id   UUID NOT NULL,
    bucket      BIGINT NOT NULL,
    merchant_id UUID NOT NULL,
    refunds     BIGINT NOT NULL,
    amount      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, bucket, merchant_id)
);

-- The tenant's other movements by quarter hour.
CREATE TABLE report_movements (
    tenant_id           UUID NOT NULL,
    bucket              BIGINT NOT NULL,
    top_ups             BIGINT NOT NULL,
    subsidies_issued    BIGINT NOT NULL,
    arrears_opened      BIGINT NOT NULL,
    arrears_recovered   BIGINT NOT NULL,
    arrears_written_off BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, bucket)
);
