//! A generated table: rows drawn from a [`TableDef`]'s value generators, keys unique.

use std::collections::HashSet;

use super::vocab::{Pools, TableDef};
use crate::env::db::TableSpec;
use crate::env::db::item::{Column, TableInfo};
use crate::rng::Rng;

/// A table of a domain filled with rows (every value text, as in DB Bench).
#[derive(Debug, Clone)]
pub struct SyntheticTable {
    /// The definition it was drawn from.
    pub def: TableDef,
    /// Rows, values in column order.
    pub rows: Vec<Vec<String>>,
}

impl SyntheticTable {
    /// Draws `rows` rows (fewer only if the key generator runs out of distinct values).
    pub fn generate(def: &TableDef, pools: &Pools, rows: usize, rng: &mut Rng) -> Self {
        let key = def.key_index();
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(rows);
        for _ in 0..rows * 20 {
            if out.len() == rows {
                break;
            }
            let row: Vec<String> = def
                .columns
                .iter()
                .map(|c| c.kind.sample(pools, rng))
                .collect();
            if seen.insert(row[key].clone()) {
                out.push(row);
            }
        }
        Self {
            def: def.clone(),
            rows: out,
        }
    }

    /// Draws a row whose key is not in the table yet.
    pub fn new_row(&self, pools: &Pools, rng: &mut Rng) -> Option<Vec<String>> {
        let key = self.def.key_index();
        (0..50).find_map(|_| {
            let row: Vec<String> = self
                .def
                .columns
                .iter()
                .map(|c| c.kind.sample(pools, rng))
                .collect();
            (!self.rows.iter().any(|r| r[key] == row[key])).then_some(row)
        })
    }

    /// Index of the column named `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.def.columns.iter().position(|c| c.name == name)
    }

    /// The numeric value of column `col` in every row (`NaN` where it does not parse).
    pub fn numbers(&self, col: usize) -> Vec<f64> {
        self.rows
            .iter()
            .map(|r| r[col].parse().unwrap_or(f64::NAN))
            .collect()
    }

    /// How many rows hold `value` in column `col`.
    pub fn count(&self, col: usize, value: &str) -> usize {
        self.rows.iter().filter(|r| r[col] == value).count()
    }

    /// The table in DB Bench's inline form.
    pub fn spec(&self) -> TableSpec {
        TableSpec {
            table_name: self.def.name.clone(),
            table_info: TableInfo {
                columns: self
                    .def
                    .columns
                    .iter()
                    .map(|c| Column {
                        name: c.name.clone(),
                        kind: "TEXT".into(),
                    })
                    .collect(),
                rows: self
                    .rows
                    .iter()
                    .map(|r| {
                        r.iter()
                            .map(|v| serde_json::Value::String(v.clone()))
                            .collect()
                    })
                    .collect(),
            },
        }
    }

    /// DB Bench's sentence naming the table and its headers.
    pub fn add_description(&self) -> String {
        let headers: Vec<&str> = self.def.columns.iter().map(|c| c.name.as_str()).collect();
        format!(
            "The name of this table is {}, and the headers of this table are {}.",
            self.def.name,
            headers.join(",")
        )
    }
}
