-- A subsidy rule can be rejected by a checker (or withdrawn by its maker) while it is
-- pending, with a reason its maker reads. The status column keeps 'pending' for such a
-- rule, so that its CHECK need not change; `rejected_at` marks it. Nodes of the previous
-- release neither read nor write these columns, and would still approve a rule rejected
-- here: finish the rolling update before rejecting rules.
ALTER TABLE subsidy_rules ADD COLUMN rejected_by TEXT;
ALTER TABLE subsidy_rules ADD COLUMN rejected_at INTEGER;
ALTER TABLE subsidy_rules ADD COLUMN reject_reason TEXT;
-- The rules' list: a tenant's, newest first.
CREATE INDEX subsidy_rules_tenant ON subsidy_rules (tenant_id, id);
