//! AgentBench's table hash, which scores INSERT/UPDATE episodes.
//!
//! AgentBench (on MySQL) runs
//! `SELECT MD5(GROUP_CONCAT(rowhash ORDER BY rowhash)) FROM (SELECT SUBSTRING(MD5(CONCAT_WS(',', cols...)), 1, 5) AS rowhash FROM t)`
//! and compares the printed result, `[('<md5>',)]`, with the item's `answer_md5`. This computes
//! the same on SQLite: `CONCAT_WS` skips NULLs, every value is rendered as text.

use md5::{Digest, Md5};
use rusqlite::Connection;
use rusqlite::types::ValueRef;

use super::item::quote_ident;
use crate::error::Result;

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A value as MySQL's `CONCAT_WS` would render it; `None` for NULL (skipped).
fn as_text(value: ValueRef<'_>) -> Option<String> {
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

/// The table's hash in AgentBench's printed form, `[('<md5>',)]`.
pub fn table_hash(conn: &Connection, table: &str) -> Result<String> {
    let mut stmt = conn.prepare(&format!("SELECT * FROM {}", quote_ident(table)))?;
    let n = stmt.column_count();
    // Five hex digits per row, kept as bytes: a table of millions of rows stays small.
    let mut row_hashes: Vec<[u8; 5]> = Vec::new();
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let mut fields = Vec::with_capacity(n);
        for i in 0..n {
            if let Some(text) = as_text(row.get_ref(i)?) {
                fields.push(text);
            }
        }
        let hex = md5_hex(fields.join(",").as_bytes());
        let mut prefix = [0u8; 5];
        prefix.copy_from_slice(&hex.as_bytes()[..5]);
        row_hashes.push(prefix);
    }
    row_hashes.sort_unstable();
    let joined = row_hashes.join(&b',');
    Ok(format!("[('{}',)]", md5_hex(&joined)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_of_known_strings() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"a,b"), "b345e1dc09f20fdefdea469f09167892");
    }

    #[test]
    fn nulls_are_skipped_and_row_order_does_not_matter() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE \"t x\" (a TEXT, b TEXT);
             INSERT INTO \"t x\" VALUES ('1', NULL), ('2', 'y');",
        )
        .unwrap();
        let h1 = table_hash(&conn, "t x").unwrap();
        // By hand: rows "1" and "2,y" → first 5 hex of each MD5, sorted, joined, MD5'd.
        let mut parts = [
            md5_hex(b"1")[..5].to_string(),
            md5_hex(b"2,y")[..5].to_string(),
        ];
        parts.sort();
        assert_eq!(
            h1,
            format!("[('{}',)]", md5_hex(parts.join(",").as_bytes()))
        );
        conn.execute_batch(
            "DELETE FROM \"t x\"; INSERT INTO \"t x\" VALUES ('2', 'y'), ('1', NULL);",
        )
        .unwrap();
        assert_eq!(table_hash(&conn, "t x").unwrap(), h1);
    }
}
