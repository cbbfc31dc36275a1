//! Environments the agent acts in. `db`: AgentBench's DB Bench on SQLite.
//!
//! So far: DB Bench items and their modification scoring (the table hash). The interaction
//! loop, sandbox, answer scoring and the household world are being built (issue 5).

pub mod db;
