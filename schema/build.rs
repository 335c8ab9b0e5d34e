//! The SQL migrations are embedded at compile time (`refinery::embed_migrations!`), so a
//! new or changed migration file must rebuild this crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
