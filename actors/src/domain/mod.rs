//! Pure domain rules: no I/O, no actors, easy to test exhaustively.

pub mod booking;
pub mod checkin;
pub mod code;
pub mod collection;
pub mod directory;
pub mod edition;
pub mod funding;
pub mod maintenance;
pub mod risk;
pub mod validate;
pub mod visitors;
