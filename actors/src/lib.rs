//! onecard-actors: behaviour and concurrency. The pure domain rules live in `domain`;
//! the actors that own state (wallets, merchants, hub, sessions) join them as the money
//! core and real-time layers land. Nothing here knows HTTP.

pub mod clock;
pub mod domain;
pub mod keys;
