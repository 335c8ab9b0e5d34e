-- A card's holders, listed in the order they first claimed it.
CREATE INDEX card_claims_card ON card_claims (card_id, id);
