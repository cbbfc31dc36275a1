//! A hardened SQLite database for model-written SQL.
//!
//! Each episode gets its own in-memory database. After the task's tables are loaded the
//! connection is locked down: defensive mode, no attached databases (so no `ATTACH` and no
//! `VACUUM INTO`), an authorizer that refuses `ATTACH`/`DETACH`, extension loading and every
//! `PRAGMA` but a few read-only schema ones, caps on string, SQL and database size (temporary
//! tables live in memory under their own cap, so nothing reaches the disk), and a progress
//! handler that interrupts any statement running past its time limit, or past the time budget
//! of the reply it belongs to. Results are read only as far as the observation needs, so an
//! endless query costs no memory; the scorer's reads (the table hash) run under the same limit.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, MAIN_DB, Statement};

use crate::error::{Error, Result};
use crate::python::PyValue;

/// Characters of an observation before AgentBench cuts it and appends `[TRUNCATED]`.
pub const OBSERVATION_CHARS: usize = 800;

/// Bounds on what one statement may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Wall-clock time per statement (and for the scorer's read of the table).
    pub timeout: Duration,
    /// Wall-clock time for all the statements of one reply (a function-calling reply may
    /// run several); a statement past it is stopped, and the reply's later ones are not run.
    pub reply_timeout: Duration,
    /// Largest string or blob, in bytes.
    pub max_value_bytes: i32,
    /// Longest SQL text, in bytes.
    pub max_sql_bytes: i32,
    /// Largest database, in 4 KiB pages.
    pub max_pages: u32,
    /// Largest temporary database (`CREATE TEMP TABLE`, kept in memory), in 4 KiB pages.
    pub max_temp_pages: u32,
    /// Most rows read from one result (the observation needs far fewer).
    pub max_rows: usize,
    /// Reading stops once the rows' repr passes this many characters (an observation shows
    /// 800; a reward comparing results wants them whole).
    pub max_result_chars: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(5),
            max_value_bytes: 1 << 20,
            max_sql_bytes: 100_000,
            max_pages: 25_600,
            max_temp_pages: 2_560,
            max_rows: 10_000,
            max_result_chars: 4 * OBSERVATION_CHARS,
        }
    }
}

/// What a statement gave.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlResult {
    /// Rows of a query (possibly only the first ones: see `complete`).
    Rows {
        /// The rows read, each a tuple of values.
        rows: Vec<Vec<PyValue>>,
        /// Whether every row was read.
        complete: bool,
    },
    /// A statement without result columns ran; rows changed.
    Done(usize),
    /// It failed (syntax, constraint, limit, timeout); the message.
    Error(String),
}

impl SqlResult {
    /// The observation AgentBench would send: `str()` of the fetched rows (a Python list of
    /// tuples) or the error text, cut at 800 characters plus `[TRUNCATED]`.
    pub fn observation(&self) -> String {
        let full = match self {
            SqlResult::Rows { rows, .. } => rows_repr(rows, OBSERVATION_CHARS + 1),
            SqlResult::Done(_) => "[]".to_string(),
            SqlResult::Error(e) => e.clone(),
        };
        truncate_observation(&full)
    }
}

/// AgentBench's cut: the first 800 characters plus `[TRUNCATED]` when longer.
pub fn truncate_observation(text: &str) -> String {
    match text.char_indices().nth(OBSERVATION_CHARS) {
        Some((at, _)) => format!("{}[TRUNCATED]", &text[..at]),
        None => text.to_string(),
    }
}

/// `str(rows)` for a list of tuples, stopped once it is longer than `max_chars` (enough to
/// decide the truncated observation).
fn rows_repr(rows: &[Vec<PyValue>], max_chars: usize) -> String {
    let mut out = String::from("[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&PyValue::Tuple(row.clone()).repr());
        if out.chars().count() > max_chars {
            return out;
        }
    }
    out.push(']');
    out
}

/// An in-memory database that model-written SQL runs in.
pub struct Sandbox {
    conn: Connection,
    limits: SandboxLimits,
    /// Nanoseconds after `epoch` at which the running statement is interrupted.
    deadline: Arc<AtomicU64>,
    /// When the current reply's time budget ends (after `epoch`); `None` outside a reply.
    reply_deadline: Cell<Option<Duration>>,
    epoch: Instant,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Read-only schema pragmas a model may use to look at a table (MySQL's `DESCRIBE`).
const ALLOWED_PRAGMAS: [&str; 5] = [
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
];

fn authorize(ctx: AuthContext<'_>) -> Authorization {
    match ctx.action {
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
        AuthAction::Pragma { pragma_name, .. } => {
            let name = pragma_name.to_ascii_lowercase();
            // `PRAGMA table_info(t)` passes `t` as the value; these pragmas only read.
            let read_only = ALLOWED_PRAGMAS.contains(&name.as_str())
                && ctx.database_name.is_none_or(|d| d == "main");
            if read_only {
                Authorization::Allow
            } else {
                Authorization::Deny
            }
        }
        AuthAction::Function { function_name } => {
            if function_name.eq_ignore_ascii_case("load_extension") {
                Authorization::Deny
            } else {
                Authorization::Allow
            }
        }
        _ => Authorization::Allow,
    }
}

impl Sandbox {
    /// An in-memory copy of the SQLite file at `path` (which is never written), read-only
    /// when `read_only` (`PRAGMA query_only`, which the authorizer then keeps on).
    pub fn from_file(path: &Path, limits: SandboxLimits, read_only: bool) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::MissingFile {
                path: path.to_path_buf(),
                hint: "a SQLite database file is needed for this task".into(),
            });
        }
        Self::new(limits, |conn| {
            conn.restore(MAIN_DB, path, None::<fn(rusqlite::backup::Progress)>)?;
            if read_only {
                conn.execute_batch("PRAGMA query_only = ON;")?;
            }
            Ok(())
        })
    }

    /// A fresh in-memory database; `setup` fills it (tables, rows) before the lock-down.
    pub fn new(
        limits: SandboxLimits,
        setup: impl FnOnce(&mut Connection) -> Result<()>,
    ) -> Result<Self> {
        let mut conn = Connection::open_in_memory()?;
        setup(&mut conn)?;
        // Temporary objects in memory (SQLite would spill them to a file in /var/tmp), capped;
        // naming the `temp` schema opens it now, so the cap holds from the first temp table.
        conn.execute_batch(&format!(
            "PRAGMA temp_store = MEMORY; PRAGMA max_page_count = {}; PRAGMA temp.max_page_count = {};",
            limits.max_pages, limits.max_temp_pages
        ))?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, limits.max_value_bytes)?;
        conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, limits.max_sql_bytes)?;
        conn.set_limit(Limit::SQLITE_LIMIT_EXPR_DEPTH, 200)?;
        conn.set_limit(Limit::SQLITE_LIMIT_TRIGGER_DEPTH, 10)?;
        conn.authorizer(Some(authorize))?;
        let epoch = Instant::now();
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let watch = Arc::clone(&deadline);
        conn.progress_handler(
            1_000,
            Some(move || epoch.elapsed().as_nanos() as u64 > watch.load(Ordering::Relaxed)),
        )?;
        Ok(Self {
            conn,
            limits,
            deadline,
            reply_deadline: Cell::new(None),
            epoch,
        })
    }

    /// Starts a reply: the statements run until [`Sandbox::end_reply`] share one time budget,
    /// `reply_timeout`.
    pub fn begin_reply(&self) {
        self.reply_deadline
            .set(Some(self.epoch.elapsed() + self.limits.reply_timeout));
    }

    /// Ends the reply [`Sandbox::begin_reply`] started.
    pub fn end_reply(&self) {
        self.reply_deadline.set(None);
    }

    /// The table's hash in AgentBench's printed form (see [`super::hash`]), read within the
    /// statement time limit; the error text when the table is gone or the read fails or
    /// runs out of time (the scorer then counts the episode wrong, as AgentBench does).
    pub fn table_hash(&self, table: &str) -> std::result::Result<String, String> {
        let until = self.epoch.elapsed() + self.limits.timeout;
        self.until(until, || super::hash::table_hash(&self.conn, table))
            .map_err(|e| e.to_string())
    }

    /// Runs `f` with every statement it makes interrupted at `until` (after `epoch`).
    fn until<T>(&self, until: Duration, f: impl FnOnce() -> T) -> T {
        self.deadline
            .store(until.as_nanos() as u64, Ordering::Relaxed);
        let result = f();
        self.deadline.store(u64::MAX, Ordering::Relaxed);
        result
    }

    /// The connection, for reads outside the limits (schema listings of a trusted database,
    /// tests).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Runs one statement within the limits.
    pub fn execute(&self, sql: &str) -> SqlResult {
        if sql.trim().is_empty() {
            return SqlResult::Error("Query was empty".into());
        }
        let now = self.epoch.elapsed();
        let statement_end = now + self.limits.timeout;
        let reply_end = self.reply_deadline.get();
        let until = reply_end.map_or(statement_end, |r| r.min(statement_end));
        if until <= now {
            return SqlResult::Error(self.reply_spent());
        }
        match self.until(until, || self.run(sql)) {
            Ok(r) => r,
            Err(e) => SqlResult::Error(match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::OperationInterrupted =>
                {
                    if until < statement_end {
                        self.reply_spent()
                    } else {
                        format!(
                            "the statement was stopped after {} s",
                            self.limits.timeout.as_secs_f64()
                        )
                    }
                }
                other => other.to_string(),
            }),
        }
    }

    fn reply_spent(&self) -> String {
        format!(
            "the statement was stopped: the statements of one reply may run {} s in all",
            self.limits.reply_timeout.as_secs_f64()
        )
    }

    fn run(&self, sql: &str) -> rusqlite::Result<SqlResult> {
        let mut stmt = self.conn.prepare(sql)?;
        if stmt.column_count() == 0 {
            let changed = stmt.raw_execute()?;
            return Ok(SqlResult::Done(changed));
        }
        self.read_rows(&mut stmt)
    }

    fn read_rows(&self, stmt: &mut Statement<'_>) -> rusqlite::Result<SqlResult> {
        let columns = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        let mut chars = 1;
        while let Some(row) = rows.next()? {
            let values = (0..columns)
                .map(|i| row.get_ref(i).map(py_value))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            chars += PyValue::Tuple(values.clone()).repr().chars().count() + 2;
            out.push(values);
            // Enough for what the caller needs (the observation, or a reward's comparison).
            if chars > self.limits.max_result_chars || out.len() >= self.limits.max_rows {
                return Ok(SqlResult::Rows {
                    rows: out,
                    complete: rows.next()?.is_none(),
                });
            }
        }
        Ok(SqlResult::Rows {
            rows: out,
            complete: true,
        })
    }
}

/// A SQLite value as the Python value a MySQL client would return.
fn py_value(v: ValueRef<'_>) -> PyValue {
    match v {
        ValueRef::Null => PyValue::None,
        ValueRef::Integer(i) => PyValue::Int(i),
        ValueRef::Real(f) => PyValue::Float(f),
        ValueRef::Text(t) | ValueRef::Blob(t) => PyValue::Str(String::from_utf8_lossy(t).into()),
    }
}
