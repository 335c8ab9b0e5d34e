-- Identity types and card products (SPEC §3–§4). A user's `identity` names one of the
-- tenant's identity types once it defines any. A card product goes to the platform
-- operator's review when created or changed; only an approved card can be claimed. A claim
-- verifies the person by their identity type's method and activates the card for them.
CREATE TABLE identity_types (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    name            TEXT NOT NULL,
    category        TEXT NOT NULL
                    CHECK (category IN ('student', 'teacher', 'staff', 'alumni', 'visitor', 'other')),
    verification    TEXT NOT NULL
                    CHECK (verification IN ('phone', 'name_id', 'registration', 'external')),
    -- The tenant's own identity endpoint, called signed for `external`.
    external_url    TEXT,
    -- Bumped to rotate the endpoint's signing secret (derived, never stored).
    secret_version  INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (tenant_id, name),
    CHECK ((verification = 'external') = (external_url IS NOT NULL))
);

CREATE TABLE cards (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    title               TEXT NOT NULL,
    subtitle            TEXT NOT NULL CHECK (subtitle IN ('campus_card', 'alumni_card',
                        'student_card', 'teacher_card', 'staff_card', 'temporary_card',
                        'visitor_card', 'employee_card')),
    -- Who may claim it (a JSON array of identity type ids).
    identity_type_ids   TEXT NOT NULL,
    targeting           TEXT NOT NULL CHECK (targeting IN ('one_identity', 'several_identities')),
    claim_mode          TEXT NOT NULL CHECK (claim_mode IN ('follow_required', 'no_follow', 'open_link')),
    status              TEXT NOT NULL CHECK (status IN ('pending_review', 'approved', 'rejected')),
    -- Counts changes, so that the operator approves the card as they saw it.
    revision            INTEGER NOT NULL,
    review_reason       TEXT,
    reviewed_at         INTEGER,
    cover               BLOB,
    cover_type          TEXT,
    cover_sha256        BLOB,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    CHECK ((cover IS NULL) = (cover_sha256 IS NULL))
);
CREATE INDEX cards_tenant ON cards (tenant_id, created_at);
CREATE INDEX cards_pending ON cards (updated_at) WHERE status = 'pending_review';
CREATE INDEX cards_cover ON cards (cover_sha256);

-- One person's activated card. Claiming the same card again (a new phone) keeps this row
-- and moves the card to the new phone.
CREATE TABLE card_claims (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    card_id             TEXT NOT NULL REFERENCES cards (id),
    user_id             TEXT NOT NULL REFERENCES users (id),
    identity_type_id    TEXT NOT NULL,
    method              TEXT NOT NULL,
    -- The account the claim came from, when a claim ticket named one.
    account             TEXT,
    claimed_at          INTEGER NOT NULL,
    UNIQUE (card_id, user_id)
);
CREATE INDEX card_claims_user ON card_claims (tenant_id, user_id);

-- Claim tickets: the tenant's channel (its official account) vouches for an account, once.
CREATE TABLE claim_tickets (
    hash        BLOB PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    account     TEXT NOT NULL,
    followed    INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX claim_tickets_expiry ON claim_tickets (expires_at);

-- One-time codes sent by text message to prove a phone (the `phone` method).
CREATE TABLE phone_codes (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    phone       TEXT NOT NULL,
    code_hash   BLOB NOT NULL,
    sent_at     INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, phone)
);
