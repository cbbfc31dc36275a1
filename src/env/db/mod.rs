//! DB Bench on SQLite: items ([`item`]) materialised into a database, and the table hash that
//! scores INSERT/UPDATE episodes ([`hash`]).

pub mod hash;
pub mod item;

pub use hash::table_hash;
pub use item::{DbItem, TableSpec};
