//! DB Bench task kinds over a generated table: the question in one of many phrasings, the gold
//! SQL, and a short thought explaining it. Answers are never written here: the caller executes
//! the gold SQL.

use serde::{Deserialize, Serialize};

use super::table::SyntheticTable;
use super::vocab::Pools;
use crate::rng::Rng;

/// The kinds of DB Bench questions (and DELETE, which DB Bench lacks but agents meet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqlTaskKind {
    /// Read one value (DB Bench `other`).
    Lookup,
    /// Count rows matching a condition.
    Counting,
    /// Compare two rows, or list rows past a threshold.
    Comparison,
    /// The top or bottom rows by a number.
    Ranking,
    /// `SUM` of a column.
    Sum,
    /// `MIN` of a column.
    Min,
    /// `MAX` of a column.
    Max,
    /// `AVG` of a column.
    Avg,
    /// Add a row.
    Insert,
    /// Change values.
    Update,
    /// Remove rows.
    Delete,
}

impl SqlTaskKind {
    /// Every kind.
    pub const ALL: [SqlTaskKind; 11] = [
        SqlTaskKind::Lookup,
        SqlTaskKind::Counting,
        SqlTaskKind::Comparison,
        SqlTaskKind::Ranking,
        SqlTaskKind::Sum,
        SqlTaskKind::Min,
        SqlTaskKind::Max,
        SqlTaskKind::Avg,
        SqlTaskKind::Insert,
        SqlTaskKind::Update,
        SqlTaskKind::Delete,
    ];

    /// The record kind name (`lookup`, `insert`, …).
    pub fn name(self) -> &'static str {
        match self {
            SqlTaskKind::Lookup => "lookup",
            SqlTaskKind::Counting => "counting",
            SqlTaskKind::Comparison => "comparison",
            SqlTaskKind::Ranking => "ranking",
            SqlTaskKind::Sum => "sum",
            SqlTaskKind::Min => "min",
            SqlTaskKind::Max => "max",
            SqlTaskKind::Avg => "avg",
            SqlTaskKind::Insert => "insert",
            SqlTaskKind::Update => "update",
            SqlTaskKind::Delete => "delete",
        }
    }

    /// The item `type` DB Bench uses for this kind.
    pub fn dbbench_type(self) -> &'static str {
        match self {
            SqlTaskKind::Lookup => "other",
            SqlTaskKind::Counting => "counting",
            SqlTaskKind::Comparison => "comparison",
            SqlTaskKind::Ranking => "ranking",
            SqlTaskKind::Sum => "aggregation-SUM",
            SqlTaskKind::Min => "aggregation-MIN",
            SqlTaskKind::Max => "aggregation-MAX",
            SqlTaskKind::Avg => "aggregation-AVG",
            SqlTaskKind::Insert => "INSERT",
            SqlTaskKind::Update => "UPDATE",
            SqlTaskKind::Delete => "DELETE",
        }
    }

    /// Whether the task modifies the table (scored by table hash).
    pub fn is_modification(self) -> bool {
        matches!(
            self,
            SqlTaskKind::Insert | SqlTaskKind::Update | SqlTaskKind::Delete
        )
    }

    /// The default share of each kind: DB Bench is two-thirds INSERT/UPDATE, so modifications
    /// take 56 %, the eight query kinds 44 % between them.
    pub fn default_weight(self) -> f64 {
        match self {
            SqlTaskKind::Insert | SqlTaskKind::Update => 0.24,
            SqlTaskKind::Delete => 0.08,
            _ => 0.055,
        }
    }

    /// The phrasings of the question (placeholders in braces), for tests and documentation.
    pub fn phrasings(self) -> Vec<&'static str> {
        match self {
            SqlTaskKind::Lookup => LOOKUP_KEY.iter().chain(LOOKUP_VALUE).copied().collect(),
            SqlTaskKind::Counting => COUNT_CHOICE
                .iter()
                .chain(COUNT_THRESHOLD)
                .copied()
                .collect(),
            SqlTaskKind::Comparison => COMPARE_PAIR.iter().chain(COMPARE_LIST).copied().collect(),
            SqlTaskKind::Ranking => RANK_ONE
                .iter()
                .chain(RANK_TOP)
                .chain(RANK_FILTERED)
                .copied()
                .collect(),
            SqlTaskKind::Sum | SqlTaskKind::Min | SqlTaskKind::Max | SqlTaskKind::Avg => {
                AGG_PLAIN.iter().chain(AGG_FILTERED).copied().collect()
            }
            SqlTaskKind::Insert => INSERT.to_vec(),
            SqlTaskKind::Update => UPDATE_KEY.iter().chain(UPDATE_GROUP).copied().collect(),
            SqlTaskKind::Delete => DELETE_KEY
                .iter()
                .chain(DELETE_GROUP)
                .chain(DELETE_THRESHOLD)
                .copied()
                .collect(),
        }
    }
}

const LOOKUP_KEY: &[&str] = &[
    "What is the {p} of {k}?",
    "What is the {p} of the {e} {k}?",
    "Tell me the {p} of the {e} called {k}.",
    "In the {t} table, what is the {p} for {k}?",
    "Look up the {p} of {k}.",
    "I need the {p} recorded for {k}.",
    "Which {p} is listed for the {e} named {k}?",
    "For the {e} {k}, what {p} does the table show?",
    "Find the {p} of {k} in {t}.",
    "Could you tell me what the {p} of {k} is?",
    "What {p} does {k} have?",
    "Give me the {p} of {k}.",
];
const LOOKUP_VALUE: &[&str] = &[
    "Which {e} has a {p} of {v}?",
    "Name the {e} whose {p} is {v}.",
    "Which {e} in {t} is listed with the {p} {v}?",
    "Find the {e} that has {v} as its {p}.",
    "What is the {kp} of the {e} with a {p} of {v}?",
];
const COUNT_CHOICE: &[&str] = &[
    "How many {es} have a {c} of {v}?",
    "How many {es} are there with {c} {v}?",
    "Count the {es} whose {c} is {v}.",
    "What is the number of {es} with the {c} {v}?",
    "In {t}, how many rows have {c} equal to {v}?",
    "How many {es} in the table are listed with {c} {v}?",
    "Tell me how many {es} have {v} as their {c}.",
    "Find the number of {es} where the {c} is {v}.",
];
const COUNT_THRESHOLD: &[&str] = &[
    "How many {es} have a {p} {cmp} {x}?",
    "Count the {es} with a {p} {cmp} {x}.",
    "What is the number of {es} whose {p} is {cmp} {x}?",
    "In {t}, how many {es} have a {p} {cmp} {x}?",
];
const COMPARE_PAIR: &[&str] = &[
    "Which {e} has the {hl} {p}, {a} or {b}?",
    "Between {a} and {b}, which has the {hl} {p}?",
    "Compare {a} and {b}: which one has the {hl} {p}?",
    "Of the {es} {a} and {b}, which shows the {hl} {p}?",
    "Does {a} or {b} have the {hl} {p}?",
];
const COMPARE_LIST: &[&str] = &[
    "Which {es} have a {p} {cmp} {x}?",
    "List the {es} with a {p} {cmp} {x}.",
    "Name all {es} whose {p} is {cmp} {x}.",
    "Show every {e} with a {p} {cmp} {x}.",
    "Which {es} in {t} have a {p} {cmp} {x}?",
    "Find the {es} whose {p} is {cmp} {x}.",
];
const RANK_ONE: &[&str] = &[
    "Which {e} has the {ord} {p}?",
    "Name the {e} with the {ord} {p}.",
    "What is the {e} with the {ord} {p}?",
    "In {t}, which {e} has the {ord} {p}?",
    "Find the {e} whose {p} is the {ord}.",
    "Tell me which {e} has the {ord} {p}.",
];
const RANK_TOP: &[&str] = &[
    "Which three {es} have the {sup} {p}?",
    "List the three {es} with the {sup} {p}.",
    "Name the 3 {es} with the {sup} {p}.",
];
const RANK_FILTERED: &[&str] = &[
    "Among {es} with {c} {v}, which has the {ord} {p}?",
    "Of the {es} whose {c} is {v}, which one has the {ord} {p}?",
];
const AGG_PLAIN: &[&str] = &[
    "What is the {A} {p} of all {es}?",
    "Find the {A} {p} in the {t} table.",
    "Tell me the {A} {p} across every {e}.",
    "What {A} {p} do the {es} have?",
    "Compute the {A} {p} over all {es}.",
    "Among all {es}, what is the {A} {p}?",
];
const AGG_FILTERED: &[&str] = &[
    "What is the {A} {p} among {es} with {c} {v}?",
    "Calculate the {A} {p} for {es} whose {c} is {v}.",
    "For {es} with {c} {v}, what is the {A} {p}?",
    "Give the {A} {p} of the {es} listed with {c} {v}.",
    "In {t}, what is the {A} {p} of the {es} whose {c} is {v}?",
];
const SUM_WORDS: &[&str] = &["total", "combined", "summed"];
const MIN_WORDS: &[&str] = &["lowest", "minimum", "smallest"];
const MAX_WORDS: &[&str] = &["highest", "maximum", "largest"];
const AVG_WORDS: &[&str] = &["average", "mean"];
const INSERT: &[&str] = &[
    "Add a new {e} to the {t} table: {all}.",
    "Insert a record for {k} into {t} with {rest}.",
    "Please add {k} to {t}; its details are {rest}.",
    "A new {e} needs to be recorded: {all}.",
    "Record the {e} {k} in the table with {rest}.",
    "Put a new row in {t} for the {e} {k}: {rest}.",
    "Insert into {t} a {e} with the following values: {all}.",
    "We have a new {e}, {k}. Add it with {rest}.",
    "Create an entry in {t} where {all}.",
    "Register {k} as a new {e} ({rest}).",
    "Enter this {e} into {t}: {all}.",
];
const UPDATE_KEY: &[&str] = &[
    "Change the {p} of {k} to {v}.",
    "Update the {p} of {k} to {v}.",
    "Set the {p} to {v} for the {e} {k}.",
    "In {t}, the {p} of {k} should now be {v}.",
    "The {e} {k} now has a {p} of {v}; update the table.",
    "Please correct the {p} of {k}: it is {v}.",
    "Modify the record of {k} so that its {p} is {v}.",
    "Replace the {p} of {k} with {v}.",
    "{k} has changed its {p} to {v}. Reflect this in {t}.",
];
const UPDATE_GROUP: &[&str] = &[
    "For every {e} with {c} {w}, set the {p} to {v}.",
    "Update all {es} whose {c} is {w} so their {p} becomes {v}.",
    "In {t}, change the {p} to {v} wherever the {c} is {w}.",
];
const DELETE_KEY: &[&str] = &[
    "Delete {k} from the {t} table.",
    "Remove the {e} {k}.",
    "Remove the record of {k} from {t}.",
    "{k} should no longer be listed; delete it.",
    "Take {k} out of the {t} table.",
    "Erase the entry for {k}.",
];
const DELETE_GROUP: &[&str] = &[
    "Delete every {e} whose {c} is {v}.",
    "Please delete all {es} with {c} {v} from {t}.",
];
const DELETE_THRESHOLD: &[&str] = &[
    "Remove all {es} with a {p} {cmp} {x}.",
    "Delete the {es} whose {p} is {cmp} {x}.",
];

/// A question over a table with its gold SQL and the reasoning an agent would write.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// The natural-language question or instruction.
    pub question: String,
    /// The gold statement (MySQL syntax that SQLite also runs).
    pub sql: String,
    /// One or two sentences explaining the statement.
    pub thought: String,
    /// The key value of the row the task is about, when there is one (to look it up first).
    pub row_key: Option<String>,
}

/// Quotes an identifier the MySQL way (backticks), as DB Bench's gold SQL does.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A SQL string literal.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A TEXT column read as a number (MySQL and SQLite both accept this cast).
pub fn number(column: &str) -> String {
    format!("CAST({} AS DECIMAL(10,2))", ident(column))
}

fn fill(template: &str, slots: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in slots {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    let mut chars = out.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => out,
    }
}

/// One phrasing of a list, drawn uniformly.
fn phrasing(list: &[&'static str], rng: &mut Rng) -> &'static str {
    list[rng.below(list.len())]
}

fn choose<'a, T>(items: &'a [T], rng: &mut Rng) -> &'a T {
    &items[rng.below(items.len())]
}

/// Column indices of numeric, categorical and other non-key columns.
struct Columns {
    key: usize,
    numeric: Vec<usize>,
    choice: Vec<usize>,
    other: Vec<usize>,
}

fn columns(table: &SyntheticTable) -> Columns {
    let key = table.def.key_index();
    let mut c = Columns {
        key,
        numeric: vec![],
        choice: vec![],
        other: vec![],
    };
    for (i, col) in table.def.columns.iter().enumerate() {
        if i == key {
            continue;
        }
        match col.kind {
            ref k if k.is_numeric() => c.numeric.push(i),
            super::vocab::ValueKind::Choice(_) => c.choice.push(i),
            _ => c.other.push(i),
        }
    }
    c
}

/// The shared slots: entity, plural, table and key phrase.
fn base_slots(table: &SyntheticTable) -> [(&'static str, String); 4] {
    let d = &table.def;
    [
        ("e", d.entity[0].clone()),
        ("es", d.entity[1].clone()),
        ("t", d.name.clone()),
        ("kp", d.columns[d.key_index()].phrase.clone()),
    ]
}

fn question(table: &SyntheticTable, template: &str, extra: &[(&str, String)]) -> String {
    let base = base_slots(table);
    let slots: Vec<(&str, &str)> = base
        .iter()
        .chain(extra)
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    fill(template, &slots)
}

/// Drafts a task of `kind` over `table`; `None` when the table cannot support it this time
/// (ties, no categorical column, …): draw another table or seed.
pub fn draft(
    kind: SqlTaskKind,
    table: &SyntheticTable,
    pools: &Pools,
    rng: &mut Rng,
) -> Option<Draft> {
    if table.rows.len() < 3 {
        return None;
    }
    let cols = columns(table);
    let name = |i: usize| table.def.columns[i].name.as_str();
    let phrase = |i: usize| table.def.columns[i].phrase.clone();
    let t = ident(&table.def.name);
    let key = cols.key;
    let row = rng.below(table.rows.len());
    let k = table.rows[row][key].clone();
    let cast_note = "The values are stored as text, so I cast them to numbers first.";
    match kind {
        SqlTaskKind::Lookup => {
            let others: Vec<usize> = (0..table.def.columns.len()).filter(|&i| i != key).collect();
            let target = *choose(&others, rng);
            let v = table.rows[row][target].clone();
            if rng.below(3) == 0 && table.count(target, &v) == 1 {
                let q = question(
                    table,
                    phrasing(LOOKUP_VALUE, rng),
                    &[("p", phrase(target)), ("v", v.clone())],
                );
                return Some(Draft {
                    question: q,
                    sql: format!(
                        "SELECT {} FROM {t} WHERE {} = {}",
                        ident(name(key)),
                        ident(name(target)),
                        literal(&v)
                    ),
                    thought: format!(
                        "I need the {} of the row whose {} is {v}.",
                        name(key),
                        name(target)
                    ),
                    row_key: None,
                });
            }
            Some(Draft {
                question: question(
                    table,
                    phrasing(LOOKUP_KEY, rng),
                    &[("p", phrase(target)), ("k", k.clone())],
                ),
                sql: format!(
                    "SELECT {} FROM {t} WHERE {} = {}",
                    ident(name(target)),
                    ident(name(key)),
                    literal(&k)
                ),
                thought: format!(
                    "I need the {} of the row whose {} is {k}.",
                    name(target),
                    name(key)
                ),
                row_key: None,
            })
        }
        SqlTaskKind::Counting => {
            if !cols.choice.is_empty() && rng.below(2) == 0 {
                let c = *choose(&cols.choice, rng);
                let v = table.rows[row][c].clone();
                return Some(Draft {
                    question: question(
                        table,
                        phrasing(COUNT_CHOICE, rng),
                        &[("c", phrase(c)), ("v", v.clone())],
                    ),
                    sql: format!(
                        "SELECT COUNT(*) FROM {t} WHERE {} = {}",
                        ident(name(c)),
                        literal(&v)
                    ),
                    thought: format!("I'll count the rows whose {} is {v}.", name(c)),
                    row_key: None,
                });
            }
            let n = *choose(&cols.numeric, rng);
            let x = table.rows[row][n].clone();
            let (cmp, op) = threshold_words(rng);
            Some(Draft {
                question: question(
                    table,
                    phrasing(COUNT_THRESHOLD, rng),
                    &[("p", phrase(n)), ("cmp", cmp.into()), ("x", x.clone())],
                ),
                sql: format!(
                    "SELECT COUNT(*) FROM {t} WHERE {} {op} {x}",
                    number(name(n))
                ),
                thought: format!(
                    "I'll count the rows where {} is {cmp} {x}. {cast_note}",
                    name(n)
                ),
                row_key: None,
            })
        }
        SqlTaskKind::Comparison => {
            let n = *choose(&cols.numeric, rng);
            let values = table.numbers(n);
            if rng.below(2) == 0 {
                let other = rng.below(table.rows.len());
                if other == row || values[other] == values[row] || values[row].is_nan() {
                    return None;
                }
                let b = table.rows[other][key].clone();
                let higher = rng.below(2) == 0;
                let hl = if higher {
                    *choose(&["higher", "larger", "greater"], rng)
                } else {
                    *choose(&["lower", "smaller"], rng)
                };
                return Some(Draft {
                    question: question(
                        table,
                        phrasing(COMPARE_PAIR, rng),
                        &[
                            ("p", phrase(n)),
                            ("hl", hl.into()),
                            ("a", k.clone()),
                            ("b", b.clone()),
                        ],
                    ),
                    sql: format!(
                        "SELECT {} FROM {t} WHERE {} IN ({}, {}) ORDER BY {} {} LIMIT 1",
                        ident(name(key)),
                        ident(name(key)),
                        literal(&k),
                        literal(&b),
                        number(name(n)),
                        if higher { "DESC" } else { "ASC" }
                    ),
                    thought: format!(
                        "I'll compare the {} of {k} and {b} and keep the {hl} one. {cast_note}",
                        name(n)
                    ),
                    row_key: None,
                });
            }
            // A threshold that leaves 1 to 5 rows on its side, without ties at the edge.
            let (cmp, op) = threshold_words(rng);
            let descending = op.starts_with('>');
            let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
            sorted.sort_by(|a, b| a.total_cmp(b));
            if descending {
                sorted.reverse();
            }
            let m = 1 + rng.below(5.min(sorted.len() - 1));
            if sorted[m - 1] == sorted[m] {
                return None;
            }
            let x_row = values.iter().position(|v| *v == sorted[m])?;
            let x = table.rows[x_row][n].clone();
            Some(Draft {
                question: question(
                    table,
                    phrasing(COMPARE_LIST, rng),
                    &[("p", phrase(n)), ("cmp", cmp.into()), ("x", x.clone())],
                ),
                sql: format!(
                    "SELECT {} FROM {t} WHERE {} {op} {x}",
                    ident(name(key)),
                    number(name(n))
                ),
                thought: format!(
                    "I'll select the rows whose {} is {cmp} {x}. {cast_note}",
                    name(n)
                ),
                row_key: None,
            })
        }
        SqlTaskKind::Ranking => {
            let n = *choose(&cols.numeric, rng);
            let highest = rng.below(2) == 0;
            let mut filter = None;
            let (template, limit, offset) = match rng.below(5) {
                0 if !cols.choice.is_empty() => {
                    let c = *choose(&cols.choice, rng);
                    filter = Some((c, table.rows[row][c].clone()));
                    (phrasing(RANK_FILTERED, rng), 1, 0)
                }
                1 => (phrasing(RANK_TOP, rng), 3, 0),
                2 => (phrasing(RANK_ONE, rng), 1, 1),
                _ => (phrasing(RANK_ONE, rng), 1, 0),
            };
            let mut values: Vec<f64> = table
                .rows
                .iter()
                .zip(table.numbers(n))
                .filter(|(r, _)| filter.as_ref().is_none_or(|(c, v)| &r[*c] == v))
                .map(|(_, x)| x)
                .collect();
            values.sort_by(|a, b| a.total_cmp(b));
            if highest {
                values.reverse();
            }
            let end = offset + limit;
            if values.len() < end || values.iter().any(|v| v.is_nan()) {
                return None;
            }
            // The chosen rows must be separated from their neighbours (no ties).
            let separated = (offset == 0 || values[offset - 1] != values[offset])
                && (values.len() == end || values[end - 1] != values[end]);
            if !separated {
                return None;
            }
            let ord = match (highest, offset) {
                (true, 0) => *choose(&["highest", "largest", "greatest"], rng),
                (false, 0) => *choose(&["lowest", "smallest"], rng),
                (true, _) => "second highest",
                (false, _) => "second lowest",
            };
            let sup = if highest { "highest" } else { "lowest" };
            let (c, v) = filter
                .as_ref()
                .map(|(c, v)| (phrase(*c), v.clone()))
                .unwrap_or_default();
            let where_ = filter
                .as_ref()
                .map(|(c, v)| format!(" WHERE {} = {}", ident(name(*c)), literal(v)))
                .unwrap_or_default();
            let dir = if highest { "DESC" } else { "ASC" };
            let offset_sql = if offset > 0 {
                format!(" OFFSET {offset}")
            } else {
                String::new()
            };
            Some(Draft {
                question: question(
                    table,
                    template,
                    &[
                        ("p", phrase(n)),
                        ("ord", ord.into()),
                        ("sup", sup.into()),
                        ("c", c),
                        ("v", v),
                    ],
                ),
                sql: format!(
                    "SELECT {} FROM {t}{where_} ORDER BY {} {dir} LIMIT {limit}{offset_sql}",
                    ident(name(key)),
                    number(name(n))
                ),
                thought: format!(
                    "I'll order the rows by {} ({}) and take the right position. {cast_note}",
                    name(n),
                    dir.to_lowercase()
                ),
                row_key: None,
            })
        }
        SqlTaskKind::Sum | SqlTaskKind::Min | SqlTaskKind::Max | SqlTaskKind::Avg => {
            let (words, func) = match kind {
                SqlTaskKind::Sum => (SUM_WORDS, "SUM"),
                SqlTaskKind::Min => (MIN_WORDS, "MIN"),
                SqlTaskKind::Max => (MAX_WORDS, "MAX"),
                _ => (AVG_WORDS, "AVG"),
            };
            let n = *choose(&cols.numeric, rng);
            let a = choose(words, rng).to_string();
            let filtered = !cols.choice.is_empty() && rng.below(2) == 0;
            let (template, where_, c, v) = if filtered {
                let c = *choose(&cols.choice, rng);
                let v = table.rows[row][c].clone();
                (
                    phrasing(AGG_FILTERED, rng),
                    format!(" WHERE {} = {}", ident(name(c)), literal(&v)),
                    phrase(c),
                    v,
                )
            } else {
                (
                    phrasing(AGG_PLAIN, rng),
                    String::new(),
                    String::new(),
                    String::new(),
                )
            };
            Some(Draft {
                question: question(
                    table,
                    template,
                    &[("p", phrase(n)), ("A", a), ("c", c), ("v", v)],
                ),
                sql: format!("SELECT {func}({}) FROM {t}{where_}", number(name(n))),
                thought: format!("This is {func} over the {} column. {cast_note}", name(n)),
                row_key: None,
            })
        }
        SqlTaskKind::Insert => {
            let new = table.new_row(pools, rng)?;
            let style = rng.below(3);
            let assign = |skip_key: bool| {
                let parts: Vec<String> = table
                    .def
                    .columns
                    .iter()
                    .zip(&new)
                    .enumerate()
                    .filter(|(i, _)| !(skip_key && *i == key))
                    .map(|(_, (c, v))| match style {
                        0 => format!("{} {v}", c.phrase),
                        1 => format!("{} '{v}'", c.name),
                        _ => format!("{} = {v}", c.name),
                    })
                    .collect();
                match parts.split_last() {
                    Some((last, rest)) if !rest.is_empty() => {
                        format!("{} and {last}", rest.join(", "))
                    }
                    _ => parts.join(""),
                }
            };
            let names: Vec<String> = table.def.columns.iter().map(|c| ident(&c.name)).collect();
            let values: Vec<String> = new.iter().map(|v| literal(v)).collect();
            Some(Draft {
                question: question(
                    table,
                    phrasing(INSERT, rng),
                    &[
                        ("k", new[key].clone()),
                        ("all", assign(false)),
                        ("rest", assign(true)),
                    ],
                ),
                sql: format!(
                    "INSERT INTO {t} ({}) VALUES ({})",
                    names.join(", "),
                    values.join(", ")
                ),
                thought: format!(
                    "I'll insert one row into {} with a value for every column.",
                    table.def.name
                ),
                row_key: None,
            })
        }
        SqlTaskKind::Update => {
            let others: Vec<usize> = (0..table.def.columns.len()).filter(|&i| i != key).collect();
            let target = *choose(&others, rng);
            let new = (0..20)
                .map(|_| table.def.columns[target].kind.sample(pools, rng))
                .find(|v| *v != table.rows[row][target])?;
            let group = cols
                .choice
                .iter()
                .copied()
                .filter(|&c| c != target)
                .collect::<Vec<_>>();
            if !group.is_empty() && rng.below(4) == 0 {
                let c = *choose(&group, rng);
                let w = table.rows[row][c].clone();
                return Some(Draft {
                    question: question(
                        table,
                        phrasing(UPDATE_GROUP, rng),
                        &[
                            ("p", phrase(target)),
                            ("v", new.clone()),
                            ("c", phrase(c)),
                            ("w", w.clone()),
                        ],
                    ),
                    sql: format!(
                        "UPDATE {t} SET {} = {} WHERE {} = {}",
                        ident(name(target)),
                        literal(&new),
                        ident(name(c)),
                        literal(&w)
                    ),
                    thought: format!(
                        "I'll set {} to {new} in every row whose {} is {w}.",
                        name(target),
                        name(c)
                    ),
                    row_key: None,
                });
            }
            Some(Draft {
                question: question(
                    table,
                    phrasing(UPDATE_KEY, rng),
                    &[("p", phrase(target)), ("v", new.clone()), ("k", k.clone())],
                ),
                sql: format!(
                    "UPDATE {t} SET {} = {} WHERE {} = {}",
                    ident(name(target)),
                    literal(&new),
                    ident(name(key)),
                    literal(&k)
                ),
                thought: format!(
                    "I'll update the {} of the row whose {} is {k}.",
                    name(target),
                    name(key)
                ),
                row_key: Some(k),
            })
        }
        SqlTaskKind::Delete => match rng.below(4) {
            0 if !cols.choice.is_empty() => {
                let c = *choose(&cols.choice, rng);
                let v = table.rows[row][c].clone();
                if table.count(c, &v) == table.rows.len() {
                    return None;
                }
                Some(Draft {
                    question: question(
                        table,
                        phrasing(DELETE_GROUP, rng),
                        &[("c", phrase(c)), ("v", v.clone())],
                    ),
                    sql: format!("DELETE FROM {t} WHERE {} = {}", ident(name(c)), literal(&v)),
                    thought: format!("I'll delete the rows whose {} is {v}.", name(c)),
                    row_key: None,
                })
            }
            1 => {
                let n = *choose(&cols.numeric, rng);
                let x = table.rows[row][n].clone();
                let (cmp, op) = threshold_words(rng);
                let xv: f64 = x.parse().ok()?;
                let hit = table
                    .numbers(n)
                    .iter()
                    .filter(|v| {
                        if op.starts_with('>') {
                            **v > xv
                        } else {
                            **v < xv
                        }
                    })
                    .count();
                if hit == 0 || hit == table.rows.len() {
                    return None;
                }
                Some(Draft {
                    question: question(
                        table,
                        phrasing(DELETE_THRESHOLD, rng),
                        &[("p", phrase(n)), ("cmp", cmp.into()), ("x", x.clone())],
                    ),
                    sql: format!("DELETE FROM {t} WHERE {} {op} {x}", number(name(n))),
                    thought: format!(
                        "I'll delete the rows whose {} is {cmp} {x}. {cast_note}",
                        name(n)
                    ),
                    row_key: None,
                })
            }
            _ => Some(Draft {
                question: question(table, phrasing(DELETE_KEY, rng), &[("k", k.clone())]),
                sql: format!(
                    "DELETE FROM {t} WHERE {} = {}",
                    ident(name(key)),
                    literal(&k)
                ),
                thought: format!("I'll delete the row whose {} is {k}.", name(key)),
                row_key: Some(k),
            }),
        },
    }
}

/// A comparison in words and as an operator.
fn threshold_words(rng: &mut Rng) -> (&'static str, &'static str) {
    *choose(
        &[
            ("greater than", ">"),
            ("more than", ">"),
            ("above", ">"),
            ("less than", "<"),
            ("below", "<"),
            ("under", "<"),
        ],
        rng,
    )
}
