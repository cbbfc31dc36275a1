//! AgentBench's DB Bench scoring of modifications, reproduced on SQLite.
//!
//! For every INSERT/UPDATE item of `data/agentbench-dbbench/dev.jsonl` (evaluation data:
//! never used for training), the table is materialised, the gold statement (`label[0]`) executed,
//! and the table hash must equal the item's `answer_md5` exactly.

use agentbench_tuning::env::db::{DbItem, table_hash};
use rusqlite::Connection;

#[test]
fn gold_modifications_reproduce_agentbench_table_hashes() {
    let items = DbItem::read_jsonl(&agentbench_tuning::paths::dbbench_dev_items()).unwrap();
    let modifications: Vec<&DbItem> = items.iter().filter(|i| i.is_modification()).collect();
    assert_eq!(modifications.len(), 40);
    let mut matched = 0;
    for item in &modifications {
        let conn = Connection::open_in_memory().unwrap();
        item.table.materialise(&conn).unwrap();
        let before = table_hash(&conn, &item.table.table_name).unwrap();
        let gold = item.label[0]
            .as_str()
            .expect("a modification's label is its gold statement");
        conn.execute_batch(gold)
            .unwrap_or_else(|e| panic!("{gold}: {e}"));
        let after = table_hash(&conn, &item.table.table_name).unwrap();
        let expected = item
            .answer_md5
            .as_deref()
            .expect("modifications carry answer_md5");
        assert_ne!(
            before, after,
            "the gold statement changes the table: {gold}"
        );
        assert_eq!(after, expected, "{}: {gold}", item.description);
        matched += 1;
    }
    println!("{matched}/40 INSERT/UPDATE gold statements reproduce answer_md5");
}
