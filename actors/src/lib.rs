//! onecard-actors: behaviour and concurrency. The pure domain rules live in `domain`
//! (and the wallet's `decide`); the actors that own state live beside them: wallet
//! actors and their registry, the ledger writer (group commit), the payment provider,
//! real-time delivery (outbox relay, topic log, hub) and merchant actors (running totals).
//! Nothing here knows HTTP.

pub mod clock;
pub mod domain;
pub mod keys;
pub mod ledger;
pub mod merchant;
pub mod provider;
pub mod realtime;
pub mod wake;
pub mod wallet;
pub mod wire;
