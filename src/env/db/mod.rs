//! DB Bench on SQLite: items ([`item`]) played as episodes ([`episode`]) in AgentBench's v0.2
//! text protocol ([`protocol`]), model-written SQL run in a hardened database ([`sandbox`]),
//! and scoring exactly as AgentBench: answers ([`score`]) and table hashes ([`hash`]).

pub mod episode;
pub mod hash;
pub mod item;
pub mod protocol;
pub mod sandbox;
pub mod score;

pub use episode::{DbEnv, DbOutcome, DbStatus, MAX_ROUNDS};
pub use hash::table_hash;
pub use item::{DbItem, TableSpec};
pub use protocol::{TextAction, parse_reply};
pub use sandbox::{Sandbox, SandboxLimits, SqlResult};
pub use score::{answer_matches, answer_overlap};
