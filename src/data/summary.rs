//! Tables of the 01 outputs for notebooks: composition as polars `DataFrame`s, the
//! per-source report as a [`Table`].

use std::collections::BTreeMap;

use polars::prelude::{DataFrame, NamedFrom, Series};

use super::build::DataReport;
use super::record::SftRecord;
use crate::error::{Error, Result};
use crate::table::Table;

/// A polars frame of `columns`, its failure as a plot error.
pub(crate) fn frame(columns: Vec<Series>) -> Result<DataFrame> {
    DataFrame::new_infer_height(columns.into_iter().map(Into::into).collect()).map_err(|e| {
        Error::Plot {
            title: "summary frame".into(),
            reason: e.to_string(),
        }
    })
}

/// Records per source, kind and protocol, with mean assistant turns and (when `tokens` holds
/// one count per record) mean and largest token counts.
pub fn composition_frame(records: &[SftRecord], tokens: Option<&[usize]>) -> Result<DataFrame> {
    #[derive(Default)]
    struct Group {
        n: usize,
        turns: usize,
        tokens: usize,
        max_tokens: usize,
    }
    type Key = (String, String, String);
    let mut groups: BTreeMap<Key, Group> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let protocol = r
            .protocol
            .map(|p| format!("{p:?}").to_lowercase())
            .unwrap_or("-".into());
        let g = groups
            .entry((r.source.clone(), r.kind.clone(), protocol))
            .or_default();
        g.n += 1;
        g.turns += r.trained_turns();
        let t = tokens.and_then(|t| t.get(i)).copied().unwrap_or(0);
        g.tokens += t;
        g.max_tokens = g.max_tokens.max(t);
    }
    let col = |f: &dyn Fn(&Key, &Group) -> String| -> Vec<String> {
        groups.iter().map(|(k, g)| f(k, g)).collect()
    };
    let mut columns = vec![
        Series::new("source".into(), col(&|k, _| k.0.clone())),
        Series::new("kind".into(), col(&|k, _| k.1.clone())),
        Series::new("protocol".into(), col(&|k, _| k.2.clone())),
        Series::new(
            "records".into(),
            groups.values().map(|g| g.n as u32).collect::<Vec<_>>(),
        ),
        Series::new(
            "trained turns (mean)".into(),
            groups
                .values()
                .map(|g| g.turns as f64 / g.n as f64)
                .collect::<Vec<_>>(),
        ),
    ];
    if tokens.is_some() {
        columns.push(Series::new(
            "tokens (mean)".into(),
            groups
                .values()
                .map(|g| (g.tokens / g.n) as u32)
                .collect::<Vec<_>>(),
        ));
        columns.push(Series::new(
            "tokens (max)".into(),
            groups
                .values()
                .map(|g| g.max_tokens as u32)
                .collect::<Vec<_>>(),
        ));
    }
    frame(columns)
}

/// The per-source part of a report: tried, kept, share kept, repairs, negatives, skips, and
/// the licence its dataset card states.
pub fn sources_table(report: &DataReport) -> Result<Table> {
    let mut table = Table::new([
        "source",
        "protocol",
        "tried",
        "kept",
        "kept %",
        "repaired",
        "negatives",
        "skipped",
        "licence",
    ])
    .with_title("01 data: sources");
    for s in &report.sources {
        let skipped: Vec<String> = s.skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
        table.push_row([
            s.source.clone(),
            s.protocol
                .map(|p| format!("{p:?}").to_lowercase())
                .unwrap_or("-".into()),
            s.attempted.to_string(),
            s.kept.to_string(),
            format!("{:.1}", 100.0 * s.kept_share()),
            s.repaired.to_string(),
            s.negatives.to_string(),
            skipped.join(", "),
            s.licence.clone().unwrap_or_else(|| "-".into()),
        ])?;
    }
    Ok(table)
}

/// The filters' part of a report: guard, duplicates, length, mixing, speed.
pub fn filters_table(report: &DataReport) -> Table {
    let mut rows = vec![
        (
            "evaluation entries guarded",
            report.guard_entries.to_string(),
        ),
        (
            "contaminated records dropped",
            report.contaminated.len().to_string(),
        ),
        ("exact duplicates dropped", report.dedup.exact.to_string()),
        ("near duplicates dropped", report.dedup.near.to_string()),
        (
            "over the token limit",
            if report.length_checked {
                format!("{} (limit {})", report.too_long, report.config.max_tokens)
            } else {
                "not checked".into()
            },
        ),
        ("agent records", report.agent_records.to_string()),
        ("general records", report.general_records.to_string()),
        ("seconds", format!("{:.1}", report.seconds)),
        ("records / s", format!("{:.0}", report.records_per_s)),
    ];
    for n in &report.notes {
        rows.push(("note", n.clone()));
    }
    Table::settings("01 data: filters and mixing", rows)
}

/// Any serialisable settings (a config) as a two-column table, one row per field.
pub fn settings_table(title: &str, value: &impl serde::Serialize) -> Table {
    let value = crate::table::shortest_floats(serde_json::to_value(value).unwrap_or_default());
    let rows: Vec<(String, String)> = match value.as_object() {
        Some(map) => map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "-".into(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        None => vec![("value".into(), value.to_string())],
    };
    Table::settings(title, rows)
}

/// A synthetic task for reading: its first `rows` rows, then question, gold SQL and answer.
pub fn task_tables(task: &super::synthetic::SqlTask, rows: usize) -> Result<(Table, Table)> {
    let spec = &task.item.table;
    let header: Vec<String> = spec
        .table_info
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let mut table = Table::new(header).with_title(format!(
        "{} ({} rows, first {})",
        spec.table_name,
        spec.table_info.rows.len(),
        rows.min(spec.table_info.rows.len())
    ));
    for row in spec.table_info.rows.iter().take(rows) {
        table.push_row(
            row.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string()),
        )?;
    }
    let expected = match &task.item.answer_md5 {
        Some(hash) => format!("table hash {hash}"),
        None => crate::python::PyValue::List(task.answer.clone()).repr(),
    };
    let about = Table::settings(
        format!("{} task ({})", task.kind.name(), task.domain),
        [
            ("question", task.item.description.clone()),
            ("gold SQL", task.sql.clone()),
            ("expected", expected),
        ],
    );
    Ok((table, about))
}
