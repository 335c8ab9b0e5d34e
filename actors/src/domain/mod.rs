//! Pure domain rules: no I/O, no actors, easy to test exhaustively.

pub mod directory;
pub mod edition;
pub mod validate;
