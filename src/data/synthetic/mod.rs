//! Synthetic SQL worlds, the default DB data (no download): tables generated from 48 domain
//! vocabularies in DB Bench's shape (one table, human-readable names with spaces, every column
//! TEXT, 5-100 rows), questions of every DB Bench kind in varied phrasings, gold SQL, and
//! answers or table hashes computed by executing the gold SQL. Episodes written from them are
//! replayed in [`DbEnv`](crate::env::db::DbEnv) and kept only when they score correct.

pub mod table;
pub mod tasks;
pub mod vocab;

use serde::{Deserialize, Serialize};

pub use table::SyntheticTable;
pub use tasks::{Draft, SqlTaskKind, draft, ident, literal};
pub use vocab::{ColumnDef, Domain, Pools, TableDef, ValueKind, Vocabulary};

use super::episodes::{DbEpisode, DbEpisodeOptions, answer_turn, negative_turn, operation, replay};
use crate::env::Protocol;
use crate::env::db::{DbItem, Sandbox, SandboxLimits, SqlResult};
use crate::error::{Error, Result};
use crate::python::PyValue;
use crate::rng::Rng;

/// Mixes a task's seed so nearby seeds give unrelated tables.
const TASK_SALT: u64 = 0x5eed_d8b5_u64;

/// How synthetic tasks are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticOptions {
    /// Fewest rows of a table.
    pub min_rows: usize,
    /// Most rows of a table.
    pub max_rows: usize,
    /// Most answer values of a query.
    pub max_answers: usize,
    /// Relative weight of each task kind (a kind left out is never drawn).
    pub weights: Vec<(SqlTaskKind, f64)>,
}

impl Default for SyntheticOptions {
    fn default() -> Self {
        Self {
            min_rows: 5,
            max_rows: 100,
            max_answers: 10,
            weights: SqlTaskKind::ALL
                .iter()
                .map(|k| (*k, k.default_weight()))
                .collect(),
        }
    }
}

impl SyntheticOptions {
    /// Draws a task kind by weight.
    fn kind(&self, rng: &mut Rng) -> Result<SqlTaskKind> {
        let total: f64 = self.weights.iter().map(|(_, w)| w.max(0.0)).sum();
        if total <= 0.0 {
            return Err(Error::InvalidConfig {
                source_name: "SyntheticOptions".into(),
                reason: "no task kind has a positive weight".into(),
            });
        }
        let mut x = rng.uniform() * total;
        for (kind, w) in &self.weights {
            x -= w.max(0.0);
            if x < 0.0 {
                return Ok(*kind);
            }
        }
        Ok(self.weights[self.weights.len() - 1].0)
    }

    /// Draws a row count: mostly small tables, sometimes up to `max_rows`.
    fn rows(&self, rng: &mut Rng) -> usize {
        let max = self.max_rows.max(self.min_rows);
        let small = (self.min_rows + 25).min(max);
        let high = if rng.below(3) == 0 { max } else { small };
        self.min_rows + rng.below(high - self.min_rows + 1)
    }
}

/// A synthetic DB Bench task: the item (table, question, label or hash) and its gold SQL.
#[derive(Debug, Clone)]
pub struct SqlTask {
    /// The domain it was drawn from.
    pub domain: String,
    /// Its kind.
    pub kind: SqlTaskKind,
    /// The DB Bench item.
    pub item: DbItem,
    /// The gold statement.
    pub sql: String,
    /// The reasoning an agent would write before the statement.
    pub thought: String,
    /// The key of the row the task is about, if any.
    pub row_key: Option<String>,
    /// The gold answer values of a query (empty for modifications).
    pub answer: Vec<PyValue>,
    /// The generated table.
    pub table: SyntheticTable,
}

/// Executes the gold SQL: the answer values of a query, or the table hash after a
/// modification; `None` when the result is unusable (error, empty, NULL, too long, no change).
fn execute_gold(
    table: &SyntheticTable,
    kind: SqlTaskKind,
    sql: &str,
    max_answers: usize,
) -> Result<Option<(Vec<PyValue>, Option<String>)>> {
    let spec = table.spec();
    let sandbox = Sandbox::new(SandboxLimits::default(), |conn| spec.materialise(conn))?;
    let result = sandbox.execute(sql);
    Ok(match (kind.is_modification(), result) {
        (true, SqlResult::Done(n)) if n > 0 => sandbox
            .table_hash(&table.def.name)
            .ok()
            .map(|hash| (vec![], Some(hash))),
        (
            false,
            SqlResult::Rows {
                rows,
                complete: true,
            },
        ) => {
            let values: Vec<PyValue> = rows.into_iter().flatten().collect();
            let usable = !values.is_empty()
                && values.len() <= max_answers
                && !values.iter().any(|v| matches!(v, PyValue::None));
            usable.then_some((values, None))
        }
        _ => None,
    })
}

fn to_json(value: &PyValue) -> serde_json::Value {
    match value {
        PyValue::Int(i) => serde_json::json!(i),
        PyValue::Float(f) => serde_json::json!(f),
        PyValue::Str(s) => serde_json::json!(s),
        other => serde_json::json!(other.repr()),
    }
}

/// Draws one task of `kind` from `seed` (deterministic). Tables that cannot support the kind
/// this time (ties, unusable answers) are redrawn, up to 100 times.
pub fn sql_task(
    vocab: &Vocabulary,
    kind: SqlTaskKind,
    seed: u64,
    options: &SyntheticOptions,
) -> Result<SqlTask> {
    let tables: Vec<(&Domain, &TableDef)> = vocab.tables().collect();
    let mut rng = Rng::new(seed ^ TASK_SALT);
    for _ in 0..100 {
        let (domain, def) = tables[rng.below(tables.len())];
        let n = options.rows(&mut rng);
        let table = SyntheticTable::generate(def, &vocab.pools, n, &mut rng);
        let Some(d) = draft(kind, &table, &vocab.pools, &mut rng) else {
            continue;
        };
        let Some((answer, hash)) = execute_gold(&table, kind, &d.sql, options.max_answers)? else {
            continue;
        };
        let label = if kind.is_modification() {
            vec![serde_json::Value::String(d.sql.clone())]
        } else {
            answer.iter().map(to_json).collect()
        };
        let item = DbItem {
            description: d.question,
            add_description: table.add_description(),
            table: table.spec(),
            kind: vec![kind.dbbench_type().into()],
            label,
            answer_md5: hash,
            database: None,
        };
        return Ok(SqlTask {
            domain: domain.domain.clone(),
            kind,
            item,
            sql: d.sql,
            thought: d.thought,
            row_key: d.row_key,
            answer,
            table,
        });
    }
    Err(Error::InvalidConfig {
        source_name: "synthetic SQL".into(),
        reason: format!(
            "no usable {} task in 100 draws from seed {seed}; the vocabulary's tables may lack \
             the columns this kind needs",
            kind.name()
        ),
    })
}

/// Draws `count` tasks, kinds by weight: task `i` comes from seed `seed + i`.
pub fn sql_tasks(
    vocab: &Vocabulary,
    count: usize,
    seed: u64,
    options: &SyntheticOptions,
) -> Result<Vec<SqlTask>> {
    (0..count as u64)
        .map(|i| {
            let mut rng = Rng::new((seed + i) ^ TASK_SALT.rotate_left(17));
            let kind = options.kind(&mut rng)?;
            sql_task(vocab, kind, seed + i, options)
        })
        .collect()
}

/// A realistic mistake in the gold SQL (a multi-word column left unquoted, or a column name
/// misremembered) with the thought that repairs it; `None` when there is none to make.
fn mistake(task: &SqlTask, rng: &mut Rng) -> Option<(String, String)> {
    let used: Vec<&ColumnDef> = task
        .table
        .def
        .columns
        .iter()
        .filter(|c| task.sql.contains(&ident(&c.name)))
        .collect();
    if used.is_empty() {
        return None;
    }
    let spaced: Vec<&&ColumnDef> = used.iter().filter(|c| c.name.contains(' ')).collect();
    if !spaced.is_empty() && rng.below(2) == 0 {
        let c = spaced[rng.below(spaced.len())];
        return Some((
            task.sql.replacen(&ident(&c.name), &c.name, 1),
            format!(
                "The statement failed because the column name {} contains a space; it has to \
                 be quoted with backticks.",
                c.name
            ),
        ));
    }
    let c = used[rng.below(used.len())];
    let wrong = match rng.below(2) {
        0 => c.phrase.replace(' ', "_"),
        _ => format!("{}s", c.name),
    };
    if task
        .table
        .def
        .columns
        .iter()
        .any(|x| x.name.eq_ignore_ascii_case(&wrong))
    {
        return None;
    }
    Some((
        task.sql.replacen(&ident(&c.name), &ident(&wrong), 1),
        format!(
            "There is no column called {wrong}; the headers say it is {}. Let me fix the name.",
            c.name
        ),
    ))
}

/// Writes the episode of a task in `options.protocol` and replays it in `DbEnv`: sometimes a
/// look at the table first, sometimes a mistake and its repair (the mistake is masked), the
/// gold statement, for a modification sometimes a check, then the answer. `None` when the
/// replay does not score correct (never expected; counted by callers).
pub fn synthetic_episode(
    task: &SqlTask,
    options: &DbEpisodeOptions,
    rng: &mut Rng,
) -> Result<Option<DbEpisode>> {
    let protocol = options.protocol;
    let t = ident(&task.table.def.name);
    let key = ident(&task.table.def.key);
    let mut replies = Vec::new();
    let mut negative = false;
    if protocol == Protocol::Tools && rng.uniform() < options.negative_share {
        replies.push(negative_turn(&task.sql, rng));
        negative = true;
    }
    let look = match (&task.row_key, task.kind) {
        (Some(k), SqlTaskKind::Update | SqlTaskKind::Delete) if rng.below(3) == 0 => Some((
            "Let me look at the current record first.".to_string(),
            format!("SELECT * FROM {t} WHERE {key} = {}", literal(k)),
        )),
        _ if rng.below(6) == 0 => Some((
            "Let me look at a few rows to see how the values are written.".to_string(),
            format!("SELECT * FROM {t} LIMIT 3"),
        )),
        _ => None,
    };
    if let Some((thought, sql)) = look {
        let call = replies.len();
        replies.push(operation(protocol, &thought, &sql, call));
    }
    let mut repaired = false;
    if rng.uniform() < options.repair_share
        && let Some((wrong, fix)) = mistake(task, rng)
    {
        let spec = task.table.spec();
        let sandbox = Sandbox::new(SandboxLimits::default(), |conn| spec.materialise(conn))?;
        if matches!(sandbox.execute(&wrong), SqlResult::Error(_)) {
            let call = replies.len();
            replies.push(operation(protocol, &task.thought, &wrong, call).not_for_training());
            let call = replies.len();
            replies.push(operation(protocol, &fix, &task.sql, call));
            repaired = true;
        }
    }
    if !repaired {
        let thought = if negative && replies.len() == 1 {
            format!("I must use the execute_sql tool. {}", task.thought)
        } else {
            task.thought.clone()
        };
        let call = replies.len();
        replies.push(operation(protocol, &thought, &task.sql, call));
    }
    if let (Some(k), SqlTaskKind::Update) = (&task.row_key, task.kind)
        && rng.below(4) == 0
    {
        let call = replies.len();
        replies.push(operation(
            protocol,
            "Let me check that the change is there.",
            &format!("SELECT * FROM {t} WHERE {key} = {}", literal(k)),
            call,
        ));
    }
    let call = replies.len();
    let done = if task.kind.is_modification() {
        [
            "The table is modified as asked.",
            "The change is done.",
            "Done: the statement ran.",
        ][rng.below(3)]
    } else {
        [
            "The result answers the question.",
            "This gives the answer.",
            "I have the answer now.",
        ][rng.below(3)]
    };
    let values = (!task.kind.is_modification()).then_some(task.answer.as_slice());
    replies.push(answer_turn(protocol, done, values, call));
    Ok(
        replay(&task.item, protocol, replies)?.map(|conversation| DbEpisode {
            conversation,
            item: task.item.clone(),
            repaired,
            negative,
        }),
    )
}
