//! Corpora from Hugging Face hub dataset repos, read through a hub cache laid out exactly as
//! `huggingface_hub` / `hf-hub` write it (`blobs/<etag>`, `snapshots/<commit>/<path>` links,
//! `refs/<revision>`), built here from the project's own data and generated parquet / JSON(L)
//! files. Every read is offline: nothing touches the network.

use std::io::Cursor;
use std::path::Path;

use agentbench_tuning::data::{
    DataSource, OpenSource, load_bird, load_chat, load_interactions, load_react, load_spider,
};
use agentbench_tuning::paths;
use polars::prelude::{JsonFormat, JsonReader, ParquetWriter, SerReader};

const MAIN: &str = "1111111111111111111111111111111111111111";
const OLD: &str = "2222222222222222222222222222222222222222";

/// Writes `files` as the snapshot `commit` of dataset `id`, and points `refs/<revision>` at it
/// (unless the revision is the commit itself), as hf-hub does.
fn seed(cache: &Path, id: &str, revision: &str, commit: &str, files: &[(&str, Vec<u8>)]) {
    let repo = cache.join(format!("datasets--{}", id.replace('/', "--")));
    for (name, bytes) in files {
        let etag = format!("{:x}-{}", fnv(bytes), bytes.len());
        let blob = repo.join("blobs").join(&etag);
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::write(&blob, bytes).unwrap();
        let link = repo.join("snapshots").join(commit).join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = name.matches('/').count() + 2;
        let target = Path::new(&"../".repeat(depth)).join("blobs").join(&etag);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
    if revision != commit {
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join(revision), commit).unwrap();
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// `spec` opened offline in `cache`.
fn open(cache: &Path, spec: &str) -> OpenSource {
    spec.parse::<DataSource>()
        .unwrap()
        .open_in(cache, true)
        .unwrap()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A parquet file with the rows of `jsonl` (nested lists and structs kept).
fn parquet(jsonl: &str) -> Vec<u8> {
    let mut frame = JsonReader::new(Cursor::new(jsonl.as_bytes().to_vec()))
        .with_json_format(JsonFormat::JsonLines)
        .finish()
        .unwrap();
    let mut out = Vec::new();
    ParquetWriter::new(&mut out).finish(&mut frame).unwrap();
    out
}

fn chat_line(i: usize) -> String {
    serde_json::json!({
        "prompt": format!("question {i}"),
        "prompt_id": format!("{i:04}"),
        "messages": [
            {"content": format!("question {i}"), "role": "user"},
            {"content": format!("answer {i}"), "role": "assistant"},
        ],
    })
    .to_string()
}

#[test]
fn spider_sparc_and_bird_folders_load_from_the_hub_cache_fetching_only_what_they_use() {
    let cache = tempfile::tempdir().unwrap();
    let spider = paths::spider_dev_dir();
    let dev: Vec<serde_json::Value> =
        serde_json::from_slice(&read(&spider.join("dev.json"))).unwrap();
    let concert: Vec<&serde_json::Value> = dev
        .iter()
        .filter(|r| r["db_id"] == "concert_singer")
        .collect();
    let db = read(&spider.join("database/concert_singer/concert_singer.sqlite"));
    seed(
        cache.path(),
        "yale/spider-like",
        "main",
        MAIN,
        &[
            ("spider/dev.json", serde_json::to_vec(&concert).unwrap()),
            (
                "spider/database/concert_singer/concert_singer.sqlite",
                db.clone(),
            ),
        ],
    );
    let examples = load_spider(
        open(cache.path(), "hf://datasets/yale/spider-like/spider"),
        "dev.json",
        None,
    )
    .unwrap();
    assert_eq!(examples.len(), concert.len());
    assert!(examples[0].db_path.ends_with(format!(
        "datasets--yale--spider-like/snapshots/{MAIN}/spider/database/concert_singer/concert_singer.sqlite"
    )));
    assert_eq!(
        read(&examples[0].db_path),
        db,
        "the link resolves to the blob"
    );

    // SParC: a multi-turn interaction over the same database.
    let sparc = serde_json::json!([{
        "database_id": "concert_singer",
        "interaction": [
            {"utterance": "How many singers are there?", "query": "SELECT count(*) FROM singer"},
            {"utterance": "And stadiums?", "query": "SELECT count(*) FROM stadium"},
        ],
        "final": {"utterance": "x", "query": "y"},
    }]);
    seed(
        cache.path(),
        "yale/sparc-like",
        "main",
        MAIN,
        &[
            ("train.json", serde_json::to_vec(&sparc).unwrap()),
            ("database/concert_singer/concert_singer.sqlite", db.clone()),
        ],
    );
    let interactions = load_interactions(
        open(cache.path(), "hf://datasets/yale/sparc-like"),
        "train.json",
        None,
    )
    .unwrap();
    assert_eq!(interactions[0].turns.len(), 2);

    // BIRD: `train.json` with evidence and `train_databases/`.
    let bird = serde_json::json!([{
        "db_id": "concert_singer", "question": "Oldest singer?",
        "evidence": "age is in years", "SQL": "SELECT max(age) FROM singer",
    }]);
    seed(
        cache.path(),
        "bird/bird-like",
        "main",
        MAIN,
        &[
            ("train/train.json", serde_json::to_vec(&bird).unwrap()),
            (
                "train/train_databases/concert_singer/concert_singer.sqlite",
                db,
            ),
        ],
    );
    let examples = load_bird(
        open(cache.path(), "hf://datasets/bird/bird-like/train"),
        "train",
        None,
    )
    .unwrap();
    assert_eq!(examples[0].evidence, "age is in years");

    // A database the split names but the repo lacks: the error names the repo, the file and
    // the offline switch.
    let mut more = concert.clone();
    let pets = dev.iter().find(|r| r["db_id"] == "pets_1").unwrap();
    more.push(pets);
    seed(
        cache.path(),
        "yale/spider-like",
        "main",
        MAIN,
        &[("spider/dev.json", serde_json::to_vec(&more).unwrap())],
    );
    let err = load_spider(
        open(cache.path(), "hf://datasets/yale/spider-like/spider"),
        "dev.json",
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("yale/spider-like")
            && err.contains("spider/database/pets_1/pets_1.sqlite")
            && err.contains("HF_HUB_OFFLINE=1"),
        "{err}"
    );
}

#[test]
fn chat_shards_in_parquet_and_sharegpt_jsonl_stream_until_the_limit() {
    let cache = tempfile::tempdir().unwrap();
    let shard = |range: std::ops::Range<usize>| {
        parquet(&range.map(chat_line).collect::<Vec<_>>().join("\n"))
    };
    seed(
        cache.path(),
        "h4/chat",
        "main",
        MAIN,
        &[
            ("data/train_sft-00000-of-00002.parquet", shard(0..3000)),
            ("data/train_sft-00001-of-00002.parquet", shard(3000..3010)),
            ("data/test_sft-00000-of-00001.parquet", shard(9000..9005)),
            ("README.md", b"# chat".to_vec()),
        ],
    );
    let all = load_chat(open(cache.path(), "hf://datasets/h4/chat/data"), None).unwrap();
    // Shards in name order: test_sft first, then the two train_sft shards.
    assert_eq!(all.len(), 5 + 3000 + 10);
    let train = load_chat(
        open(
            cache.path(),
            "hf://datasets/h4/chat/data/train_sft-00001-of-00002.parquet",
        ),
        None,
    )
    .unwrap();
    assert_eq!(train.len(), 10);
    assert_eq!(train[0].messages[0].content, "question 3000");
    assert_eq!(train[0].messages[1].content, "answer 3000");
    // A path prefix names a set of shards.
    let sft = load_chat(
        open(cache.path(), "hf://datasets/h4/chat/data/train_sft"),
        None,
    )
    .unwrap();
    assert_eq!(sft.len(), 3010);
    // A limit stops inside the first large shard, across parquet slices.
    let some = load_chat(open(cache.path(), "hf://datasets/h4/chat/data"), Some(2100)).unwrap();
    assert_eq!(some.len(), 2100);
    assert_eq!(some[2099].messages[0].content, "question 2094");

    let sharegpt = [
        r#"{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}"#,
        r#"{"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]}"#,
    ]
    .join("\n");
    seed(
        cache.path(),
        "someone/sharegpt",
        "main",
        MAIN,
        &[("chat.jsonl", sharegpt.into_bytes())],
    );
    let chats = load_chat(open(cache.path(), "hf://datasets/someone/sharegpt"), None).unwrap();
    assert_eq!(chats.len(), 2);
    assert_eq!(chats[1].messages[2].content, "4");
}

#[test]
fn react_trajectories_load_from_a_hub_jsonl() {
    let cache = tempfile::tempdir().unwrap();
    seed(
        cache.path(),
        "fireact/trajectories",
        "main",
        MAIN,
        &[("multitask.jsonl", read(&paths::fireact_sample()))],
    );
    let hub = load_react(open(
        cache.path(),
        "hf://datasets/fireact/trajectories/multitask.jsonl",
    ))
    .unwrap();
    let local = load_react(paths::fireact_sample()).unwrap();
    assert_eq!(hub, local);
}

#[test]
fn revisions_are_pinned_and_missing_repos_or_files_are_clear_errors() {
    let cache = tempfile::tempdir().unwrap();
    seed(
        cache.path(),
        "o/chat",
        "main",
        MAIN,
        &[("train.jsonl", chat_line(1).into_bytes())],
    );
    seed(
        cache.path(),
        "o/chat",
        OLD,
        OLD,
        &[("train.jsonl", chat_line(0).into_bytes())],
    );
    let first = |spec: &str| {
        load_chat(open(cache.path(), spec), None).unwrap()[0].messages[0]
            .content
            .clone()
    };
    assert_eq!(first("hf://datasets/o/chat"), "question 1");
    assert_eq!(first(&format!("hf://datasets/o/chat@{OLD}")), "question 0");

    // A repo that is not in the cache, offline.
    let err = load_chat(open(cache.path(), "hf://datasets/o/absent"), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("o/absent") && err.contains("HF_HUB_OFFLINE=1"),
        "{err}"
    );
    // A revision the cache does not know.
    let err = load_chat(open(cache.path(), "hf://datasets/o/chat@v2"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("o/chat") && err.contains("v2"), "{err}");
    // A folder with no record files.
    let err = load_chat(open(cache.path(), "hf://datasets/o/chat/nothing"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no JSON, JSONL or parquet file"), "{err}");
    // A named file the snapshot lacks.
    let err = load_spider(open(cache.path(), "hf://datasets/o/chat"), "dev.json", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("o/chat") && err.contains("dev.json"), "{err}");
}

/// `abt data --dry-run` on the Colab profile, offline, against a hub cache holding the
/// profile's own repos at its pinned revisions: every corpus with its card's licence, the
/// files its loader needs (UltraChat's `train_sft` shards only), what is cached and what is
/// left to fetch.
#[test]
fn the_colab_profiles_corpora_are_planned_from_the_hub_cache() {
    let cache = tempfile::tempdir().unwrap();
    let db = read(&paths::spider_dev_dir().join("database/concert_singer/concert_singer.sqlite"));
    let spider = serde_json::json!([
        {"db_id": "concert_singer", "question": "How many singers?", "query": "SELECT count(*) FROM singer"},
        {"db_id": "concert_singer", "question": "Oldest age?", "query": "SELECT max(age) FROM singer"},
        {"db_id": "pets_1", "question": "How many pets?", "query": "SELECT count(*) FROM pets"},
    ]);
    let spider_rev = "40b5d04cb3836188ea7bf0ac9ed810e1ff432acf";
    seed(
        cache.path(),
        "lklimkiewicz/Spider-Raw",
        spider_rev,
        spider_rev,
        &[
            ("train_spider.json", serde_json::to_vec(&spider).unwrap()),
            ("database/concert_singer/concert_singer.sqlite", db),
        ],
    );
    let trajectory = serde_json::json!([{"id": "w0", "conversations": [
        {"from": "human", "value": "Buy a red mug."},
        {"from": "gpt", "value": "Thought: search.\nAction: search[red mug]"}
    ]}]);
    let eto_rev = "a8f745ef799a5201d2288b9c2a47e40a0ff70a4c";
    seed(
        cache.path(),
        "agent-eto/eto-sft-trajectory",
        eto_rev,
        eto_rev,
        &[
            (
                "README.md",
                b"---\nlicense: apache-2.0\n---\n# ETO\n".to_vec(),
            ),
            (
                "data/webshop_sft.json",
                serde_json::to_vec(&trajectory).unwrap(),
            ),
            (
                "data/sciworld_sft.json",
                serde_json::to_vec(&trajectory).unwrap(),
            ),
            (
                "data/alfworld_sft.json",
                serde_json::to_vec(&trajectory).unwrap(),
            ),
        ],
    );
    let shard = |from: usize| {
        parquet(
            &(from..from + 3)
                .map(chat_line)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    };
    let chat_rev = "8049631c405ae6576f93f445c6b8166f76f5505a";
    seed(
        cache.path(),
        "HuggingFaceH4/ultrachat_200k",
        chat_rev,
        chat_rev,
        &[
            (
                "README.md",
                b"---\nlicense: mit\nlanguage:\n- en\n---\n".to_vec(),
            ),
            ("data/train_sft-00000-of-00002.parquet", shard(0)),
            ("data/train_sft-00001-of-00002.parquet", shard(3)),
            ("data/test_sft-00000-of-00001.parquet", shard(6)),
        ],
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_abt"))
        .args(["data", "--dry-run", "--profile", "colab-qwen2.5-7b"])
        .env("HF_HUB_CACHE", cache.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // Spider: the split file and the two databases its examples use, one not cached yet.
    assert!(
        text.contains(&format!(
            "spider hf://datasets/lklimkiewicz/Spider-Raw@{spider_rev}\n  licence: not stated on its card\n  3 files"
        )),
        "{text}"
    );
    assert!(
        text.contains("database/pets_1/pets_1.sqlite") && text.contains("(+ 1 of unknown size)"),
        "{text}"
    );
    // ETO: the two files the profile names, not its ALFWorld file, with the card's licence.
    assert_eq!(text.matches("licence: apache-2.0").count(), 2, "{text}");
    assert!(!text.contains("alfworld"), "{text}");
    // UltraChat: its SFT shards only, all cached.
    assert!(
        text.contains("licence: mit\n  2 files, 0 B to fetch"),
        "{text}"
    );
    assert!(
        text.contains("train_sft-00001-of-00002.parquet") && !text.contains("test_sft"),
        "{text}"
    );
}
