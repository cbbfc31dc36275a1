//! The vocabulary of the synthetic SQL worlds: domains, their tables and columns, and the value
//! generator of each column. The embedded vocabulary (`domains.json`) holds 48 domains in 71 tables; a user
//! can load their own file of the same shape with [`Vocabulary::from_path`].

use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Shared pools the `person`, `city` and `country` kinds draw from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pools {
    /// Given names.
    pub first_names: Vec<String>,
    /// Family names.
    pub last_names: Vec<String>,
    /// City names.
    pub cities: Vec<String>,
    /// Country names.
    pub countries: Vec<String>,
}

/// The domains and pools the generator draws from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vocabulary {
    /// Name pools.
    pub pools: Pools,
    /// Every domain.
    pub domains: Vec<Domain>,
}

/// One subject area (a library, a marathon, a hotel) with one or two tables.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Domain {
    /// Short id, e.g. `video_games`.
    pub domain: String,
    /// Its tables.
    pub tables: Vec<TableDef>,
}

/// A table of a domain: its name, what a row is, and its columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableDef {
    /// Title-case table name with spaces, e.g. `Marathon Results`.
    pub name: String,
    /// What one row is: singular and plural (`runner`, `runners`).
    pub entity: [String; 2],
    /// The column that names a row (unique in every generated table).
    pub key: String,
    /// Columns in order, key first.
    pub columns: Vec<ColumnDef>,
}

/// A column: its name, how a question says it, and how its values are drawn.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Column name, spaces allowed.
    pub name: String,
    /// How a question names it, e.g. `number of pages`.
    pub phrase: String,
    /// The value generator.
    pub kind: ValueKind,
}

/// How the values of a column are drawn (every value is stored as TEXT).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    /// A full name from the pools.
    Person,
    /// A city from the pools.
    City,
    /// A country from the pools.
    Country,
    /// One of a few categories.
    Choice(Vec<String>),
    /// One word from each list, joined by a space (titles, product names).
    Compose(Vec<Vec<String>>),
    /// An integer in `[min, max]`.
    Int([i64; 2]),
    /// A decimal in `[min, max]` with the given number of decimals.
    Decimal((f64, f64, u32)),
    /// A year in `[min, max]`.
    Year([i32; 2]),
    /// An ISO date in `[min, max]`.
    Date([String; 2]),
    /// A code: `#` a digit, `@` a capital letter, anything else literal.
    Code(String),
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// Parses `YYYY-MM-DD` into a day number.
fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| days_from_civil(y, m, d))
}

fn pick<'a>(items: &'a [String], rng: &mut Rng) -> &'a str {
    &items[rng.below(items.len())]
}

/// An integer drawn uniformly from `[low, high]`.
fn int_between(low: i64, high: i64, rng: &mut Rng) -> i64 {
    low + rng.below((high - low + 1) as usize) as i64
}

impl ValueKind {
    /// Whether values are numbers (compared, ranked and aggregated after a cast).
    pub fn is_numeric(&self) -> bool {
        matches!(self, ValueKind::Int(_) | ValueKind::Decimal(_))
    }

    /// Draws one value as the text stored in the table.
    pub fn sample(&self, pools: &Pools, rng: &mut Rng) -> String {
        match self {
            ValueKind::Person => format!(
                "{} {}",
                pick(&pools.first_names, rng),
                pick(&pools.last_names, rng)
            ),
            ValueKind::City => pick(&pools.cities, rng).to_string(),
            ValueKind::Country => pick(&pools.countries, rng).to_string(),
            ValueKind::Choice(values) => pick(values, rng).to_string(),
            ValueKind::Compose(lists) => lists
                .iter()
                .map(|l| pick(l, rng))
                .collect::<Vec<_>>()
                .join(" "),
            ValueKind::Int([low, high]) => int_between(*low, *high, rng).to_string(),
            ValueKind::Decimal((low, high, decimals)) => {
                let scale = 10f64.powi(*decimals as i32);
                let (lo, hi) = ((low * scale).ceil() as i64, (high * scale).floor() as i64);
                let units = int_between(lo, hi.max(lo), rng);
                format!("{:.*}", *decimals as usize, units as f64 / scale)
            }
            ValueKind::Year([low, high]) => {
                int_between(i64::from(*low), i64::from(*high), rng).to_string()
            }
            ValueKind::Date([low, high]) => {
                // Validated on load: both parse and low <= high.
                let (lo, hi) = (parse_date(low).unwrap_or(0), parse_date(high).unwrap_or(0));
                let (y, m, d) = civil_from_days(int_between(lo, hi.max(lo), rng));
                format!("{y:04}-{m:02}-{d:02}")
            }
            ValueKind::Code(pattern) => pattern
                .chars()
                .map(|c| match c {
                    '#' => char::from(b'0' + rng.below(10) as u8),
                    '@' => char::from(b'A' + rng.below(26) as u8),
                    other => other,
                })
                .collect(),
        }
    }

    /// What is wrong with the generator's parameters, if anything.
    fn problem(&self) -> Option<String> {
        match self {
            ValueKind::Choice(v) if v.len() < 2 => Some("a choice needs 2 or more values".into()),
            ValueKind::Compose(lists) if lists.is_empty() || lists.iter().any(Vec::is_empty) => {
                Some("compose needs non-empty word lists".into())
            }
            ValueKind::Int([lo, hi]) if lo >= hi => Some(format!("int range {lo} >= {hi}")),
            ValueKind::Decimal((lo, hi, d)) if lo >= hi || *d > 6 => {
                Some(format!("decimal range {lo}..{hi} with {d} decimals"))
            }
            ValueKind::Year([lo, hi]) if lo >= hi => Some(format!("year range {lo} >= {hi}")),
            ValueKind::Date([lo, hi]) => match (parse_date(lo), parse_date(hi)) {
                (Some(a), Some(b)) if a < b => None,
                _ => Some(format!(
                    "date range {lo:?}..{hi:?} (want YYYY-MM-DD, low < high)"
                )),
            },
            ValueKind::Code(p) if !p.contains(['#', '@']) => {
                Some(format!("code pattern {p:?} has no # or @"))
            }
            _ => None,
        }
    }
}

impl TableDef {
    /// Index of the key column.
    pub fn key_index(&self) -> usize {
        self.columns
            .iter()
            .position(|c| c.name == self.key)
            .unwrap_or(0)
    }

    fn problem(&self) -> Option<String> {
        if self.columns.len() < 3 {
            return Some("fewer than 3 columns".into());
        }
        if !self.columns.iter().any(|c| c.name == self.key) {
            return Some(format!("key {:?} is not a column", self.key));
        }
        let mut names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Some("two columns share a name".into());
        }
        if !self.columns.iter().any(|c| c.kind.is_numeric()) {
            return Some("no numeric column".into());
        }
        self.columns.iter().find_map(|c| {
            c.kind
                .problem()
                .map(|p| format!("column {:?}: {p}", c.name))
        })
    }
}

impl Vocabulary {
    /// The vocabulary built into the crate (48 domains, 71 tables).
    pub fn embedded() -> &'static Vocabulary {
        static EMBEDDED: OnceLock<Vocabulary> = OnceLock::new();
        EMBEDDED.get_or_init(|| {
            Vocabulary::from_json(include_str!("domains.json"), "embedded")
                .unwrap_or_else(|e| panic!("the embedded vocabulary is checked by tests: {e}"))
        })
    }

    /// Reads a vocabulary from a JSON file of the embedded file's shape.
    pub fn from_path(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parses and checks a vocabulary; `source_name` names it in errors.
    pub fn from_json(text: &str, source_name: &str) -> Result<Self> {
        let bad = |reason: String| Error::Vocabulary {
            source_name: source_name.into(),
            reason,
        };
        let vocab: Vocabulary = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let p = &vocab.pools;
        if [&p.first_names, &p.last_names, &p.cities, &p.countries]
            .iter()
            .any(|l| l.is_empty())
        {
            return Err(bad("every name pool needs at least one entry".into()));
        }
        if vocab.domains.is_empty() {
            return Err(bad("no domains".into()));
        }
        for d in &vocab.domains {
            if d.tables.is_empty() {
                return Err(bad(format!("domain {:?} has no tables", d.domain)));
            }
            for t in &d.tables {
                if let Some(p) = t.problem() {
                    return Err(bad(format!(
                        "domain {:?}, table {:?}: {p}",
                        d.domain, t.name
                    )));
                }
            }
        }
        Ok(vocab)
    }

    /// Every table with its domain, in file order.
    pub fn tables(&self) -> impl Iterator<Item = (&Domain, &TableDef)> {
        self.domains
            .iter()
            .flat_map(|d| d.tables.iter().map(move |t| (d, t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_day_numbers() {
        for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (2024, 12, 31), (1899, 3, 1)] {
            assert_eq!(civil_from_days(days_from_civil(y, m, d)), (y, m, d));
        }
        assert_eq!(days_from_civil(1970, 1, 2), 1);
        assert_eq!(parse_date("2020-13-01"), None);
    }

    #[test]
    fn values_follow_their_generator() {
        let pools = Pools {
            first_names: vec!["Ada".into()],
            last_names: vec!["Lovelace".into()],
            cities: vec!["Oslo".into()],
            countries: vec!["Chile".into()],
        };
        let mut rng = Rng::new(1);
        for _ in 0..200 {
            assert_eq!(ValueKind::Person.sample(&pools, &mut rng), "Ada Lovelace");
            let v: f64 = ValueKind::Decimal((1.5, 2.0, 2))
                .sample(&pools, &mut rng)
                .parse()
                .unwrap();
            assert!((1.5..=2.0).contains(&v));
            let date = ValueKind::Date(["2020-02-27".into(), "2020-03-01".into()])
                .sample(&pools, &mut rng);
            assert!(
                ["2020-02-27", "2020-02-28", "2020-02-29", "2020-03-01"].contains(&date.as_str())
            );
            let code = ValueKind::Code("FL-#@".into()).sample(&pools, &mut rng);
            assert!(code.starts_with("FL-") && code.len() == 5, "{code}");
        }
    }

    #[test]
    fn the_embedded_vocabulary_is_large_and_valid() {
        let v = Vocabulary::embedded();
        assert!(v.domains.len() >= 40, "{} domains", v.domains.len());
        let mut names: Vec<&str> = v.tables().map(|(_, t)| t.name.as_str()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "table names must be unique");
    }

    #[test]
    fn a_bad_vocabulary_names_domain_table_and_column() {
        let text = r#"{"pools": {"first_names": ["A"], "last_names": ["B"], "cities": ["C"], "countries": ["D"]},
            "domains": [{"domain": "x", "tables": [{"name": "T", "entity": ["t", "ts"], "key": "K",
            "columns": [{"name": "K", "phrase": "k", "kind": "person"},
                        {"name": "N", "phrase": "n", "kind": {"int": [5, 1]}},
                        {"name": "M", "phrase": "m", "kind": {"int": [1, 5]}}]}]}]}"#;
        let err = Vocabulary::from_json(text, "mine.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mine.json") && err.contains("\"x\"") && err.contains("\"N\""),
            "{err}"
        );
    }
}
