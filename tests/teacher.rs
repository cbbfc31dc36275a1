//! The teacher client against a local mock of an OpenAI-compatible endpoint (no network):
//! requests carry the model, the conversation and the key; a 429 is retried; a second run is
//! served from the disk cache without a request; a model off the whitelist is refused, and a
//! 401 names the key's variable. Teacher pairs put the teacher's episode against the student's
//! worst.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use agentbench_tuning::chat::{Conversation, Message};
use agentbench_tuning::config::Profile;
use agentbench_tuning::env::{Environment, Protocol, TaskScore};
use agentbench_tuning::generate::EpisodeEnd;
use agentbench_tuning::pairs::{
    PairFilter, PairSource, PairsConfig, Sample, TeacherClient, TeacherConfig, is_teacher_model,
    teacher_pairs,
};
use agentbench_tuning::prompts::held_out_prompts;
use serde_json::Value;

/// What the mock saw: each request's headers (lower-case names) and JSON body.
type Seen = Arc<Mutex<Vec<(Vec<(String, String)>, Value)>>>;

/// Serves `responses` in order (status, extra header, body), one per connection, then stops.
fn mock(responses: Vec<(u16, Option<&'static str>, String)>) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for (status, header, body) in responses {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    let (k, v) = (k.trim().to_lowercase(), v.trim().to_string());
                    if k == "content-length" {
                        length = v.parse().unwrap();
                    }
                    headers.push((k, v));
                }
            }
            let mut buf = vec![0; length];
            reader.read_exact(&mut buf).unwrap();
            log.lock()
                .unwrap()
                .push((headers, serde_json::from_slice(&buf).unwrap()));
            let extra = header.map(|h| format!("{h}\r\n")).unwrap_or_default();
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
                body.len()
            );
            let mut stream = stream;
            stream.write_all(reply.as_bytes()).unwrap();
        }
    });
    (url, seen)
}

fn answer(content: &str) -> String {
    serde_json::json!({
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
    })
    .to_string()
}

const FINAL: &str = "The table is all I need.\nAction: Answer\nFinal Answer: [\"nothing\"]";

fn config(url: String, cache: &std::path::Path) -> TeacherConfig {
    TeacherConfig {
        url,
        model: "gpt-4o-mini".into(),
        api_key_env: "ABT_TEST_TEACHER_KEY".into(),
        requests_per_minute: 6000,
        backoff_s: 0.01,
        max_retries: 2,
        timeout_s: 10,
        cache_dir: Some(cache.to_path_buf()),
        ..TeacherConfig::default()
    }
}

#[test]
fn the_teacher_is_asked_retried_and_cached() {
    // SAFETY: no other test in this binary reads or writes this variable.
    unsafe { std::env::set_var("ABT_TEST_TEACHER_KEY", "sk-test") };
    let (url, seen) = mock(vec![
        (
            429,
            Some("Retry-After: 0"),
            "{\"error\": \"slow down\"}".into(),
        ),
        (200, None, answer(FINAL)),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let prompts = held_out_prompts(1, 0, Protocol::Text, false).unwrap();
    let mut client =
        TeacherClient::new(config(url.clone(), cache.path()), "unused".into()).unwrap();
    let (conversation, opening, score) = client.play(&prompts[0]).unwrap();
    assert_eq!(conversation.messages.len(), opening + 1);
    assert_eq!(conversation.messages[opening].content, FINAL);
    assert!(score.valid && !score.success);
    let stats = client.stats();
    assert_eq!((stats.requests, stats.retries, stats.cache_hits), (2, 1, 0));
    {
        let seen = seen.lock().unwrap();
        let (headers, body) = &seen[1];
        assert!(headers.contains(&("authorization".into(), "Bearer sk-test".into())));
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["temperature"], 0.0);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), opening);
        assert_eq!(messages[0]["role"], "user");
        assert!(messages[0]["content"].as_str().unwrap().contains("MySQL"));
    }

    // A second client on the same cache plays the same episode without a request (the mock
    // would refuse it: it has served its two responses).
    let mut again = TeacherClient::new(config(url, cache.path()), "unused".into()).unwrap();
    let (replayed, _, score2) = again.play(&prompts[0]).unwrap();
    assert_eq!(replayed, conversation);
    assert_eq!(score2, score);
    assert_eq!(again.stats().requests, 0);
    assert_eq!(again.stats().cache_hits, 1);
}

#[test]
fn unknown_models_and_refusals_are_clear_errors() {
    assert!(is_teacher_model("gpt-4o-2024-08-06"));
    assert!(is_teacher_model("Qwen/Qwen2.5-72B-Instruct"));
    assert!(!is_teacher_model("gpt-4o-evil"));
    assert!(!is_teacher_model("my-finetune"));
    let cache = tempfile::tempdir().unwrap();
    let refused = TeacherClient::new(
        TeacherConfig {
            model: "my-finetune".into(),
            ..config("http://127.0.0.1:9/v1".into(), cache.path())
        },
        "unused".into(),
    )
    .unwrap_err()
    .to_string();
    assert!(refused.contains("not an accepted teacher"), "{refused}");

    let (url, _) = mock(vec![(401, None, "{\"error\": \"bad key\"}".into())]);
    let mut client = TeacherClient::new(config(url, cache.path()), "unused".into()).unwrap();
    let conversation = Conversation::new(vec![Message::user("hello")]);
    let err = client.reply(&conversation).unwrap_err().to_string();
    assert!(
        err.contains("HTTP 401") && err.contains("ABT_TEST_TEACHER_KEY"),
        "{err}"
    );
    assert_eq!(client.stats().retries, 0);
}

#[test]
fn teacher_pairs_put_the_teachers_episode_against_the_students_worst() {
    let (url, _) = mock(vec![(200, None, answer(FINAL))]);
    let cache = tempfile::tempdir().unwrap();
    let prompts = held_out_prompts(1, 0, Protocol::Text, false).unwrap();
    let opening = prompts[0].env().reset().unwrap();
    let student = |i: usize, score: f64, reply: &str| {
        let mut conversation = opening.clone();
        conversation.push(Message::assistant(reply));
        Sample {
            prompt: 0,
            sample: i,
            task: prompts[0].source(),
            kind: prompts[0].kind(),
            protocol: Protocol::Text,
            score: TaskScore {
                success: false,
                score,
                valid: score > -0.5,
            },
            turns: 1,
            end: EpisodeEnd::Done,
            prompt_messages: opening.messages.len(),
            conversation,
        }
    };
    let samples = vec![
        student(0, -0.25, "I will look at the table first, then answer."),
        student(1, -0.5, "SELECT everything please, in no format at all"),
    ];
    let filter = PairFilter::new(&PairsConfig {
        eval_files: vec![],
        ..agentbench_tuning::presets::Presets::resolve(
            Profile::Tiny,
            agentbench_tuning::config::Scale::Full,
        )
        .unwrap()
        .pairs
    })
    .unwrap();
    let mut client = TeacherClient::new(config(url, cache.path()), "unused".into()).unwrap();
    let refs: Vec<_> = prompts.iter().collect();
    let (pairs, report, teacher) = teacher_pairs(&mut client, &refs, &samples, &filter).unwrap();
    assert_eq!(teacher.len(), 1);
    assert_eq!(pairs.len(), 1, "{:?}", report.dropped);
    let pair = &pairs[0];
    assert_eq!(pair.source, PairSource::Teacher);
    assert_eq!(pair.chosen[0].content, FINAL);
    assert_eq!(pair.rejected_score, -0.5);
    assert_eq!(pair.chosen_score, teacher[0].score.score);
    assert_eq!(pair.prompt.messages, opening.messages);
}
