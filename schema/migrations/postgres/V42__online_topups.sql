-- Online top-ups (docs/OPERATIONS.md "Online top-ups"): a cardholder pays the payment
-- provider from their phone, and the wallet is credited once the provider says it was
-- paid. A charge follows the order from `pending` to `paid` (with the provider's
-- transaction, which is the top-up's reference in the register, and the register's line)
-- or `closed`. The credit itself is an ordinary top-up through the wallet actor; the
-- register's unique reference is what makes a provider's repeated notices credit once.
CREATE TABLE charges (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    user_id     UUID NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount > 0),
    provider    TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'closed')),
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    provider_tx TEXT,
    topup_id    UUID,
    settled_at  TIMESTAMPTZ,
    CHECK ((status = 'paid') = (provider_tx IS NOT NULL AND topup_id IS NOT NULL))
);
CREATE INDEX charges_tenant ON charges (tenant_id, id);
CREATE INDEX charges_user ON charges (tenant_id, user_id, id);
-- What every node's loop asks the provider about: small, since charges settle in minutes.
CREATE INDEX charges_pending ON charges (created_at) WHERE status = 'pending';
