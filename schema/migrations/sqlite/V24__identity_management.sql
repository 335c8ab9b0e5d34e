-- An identity type's management scope (SPEC §3): departments its holders administer, each
-- `view` or `manage` with its whole subtree (a JSON array of {"id","access"}, as a group's
-- department grants).
ALTER TABLE identity_types ADD COLUMN manages TEXT NOT NULL DEFAULT '[]';
