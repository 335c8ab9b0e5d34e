-- A cardholder's statement (docs/OPERATIONS.md "Statements"): their payments, read from
-- `payments_user`, and every other movement of their money, read from the ledger through
-- three small partial indexes. None of them is written by a payment: a sale's entries all
-- carry the sale's id as both `tx_id` and `payment_id`, and a payment is inserted with
-- nothing refunded. Building them reads the ledger and the payments once, under a lock
-- that holds writes to them for that time.
--
-- Top-ups, subsidies credited and arrears (opened, repaid, written off), by whose they
-- are: the cardholder's own id for cash and arrears, a subsidy account's for a subsidy.
CREATE INDEX ledger_holder_movements ON ledger_entries (ref_id, tx_id)
    WHERE (account IN ('cash', 'subsidy') AND payment_id IS NULL) OR account = 'arrears';
-- What happened to a payment after its sale: refunds, a provider's decline, a write-off.
CREATE INDEX ledger_after_sale ON ledger_entries (payment_id, tx_id)
    WHERE payment_id IS NOT NULL AND tx_id <> payment_id;
-- A cardholder's payments with something refunded: where their refunds are found.
CREATE INDEX payments_user_refunded ON payments (user_id) WHERE refunded > 0;
