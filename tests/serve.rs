//! `abt serve` end to end: the real binary on the default model, called as AgentBench's HTTP
//! agent, the `openai` Python client and 50 concurrent clients call it; bad requests get their
//! 4xx; SIGTERM finishes the requests in flight before the process exits.
#![cfg(feature = "serve")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentbench_tuning::chat::{Conversation, Message, Role};
use agentbench_tuning::env::db::{DbEnv, DbItem};
use agentbench_tuning::env::{Environment, Protocol};
use agentbench_tuning::generate::{ChatModel, GenerateOptions};
use agentbench_tuning::model::ModelSource;
use serde_json::{Value, json};

/// A running `abt serve` on a free port, killed when dropped.
struct Server {
    child: Child,
    base: String,
    log: tempfile::NamedTempFile,
}

impl Server {
    /// Starts the server on the default model, or `None` when the model is absent.
    fn start() -> Option<Self> {
        let model = common::default_model()?;
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_abt"))
            .args(["serve", "--port", "0", "--model"])
            .arg(&model)
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(addr) = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        else {
            let _ = child.kill();
            panic!(
                "abt serve did not start: {line:?}; its log:\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
        };
        Some(Self {
            base: format!("http://{addr}"),
            child,
            log,
        })
    }

    /// Sends `body` as JSON to `path`; the status and the JSON answer.
    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        answer(
            ureq::post(&format!("{}{path}", self.base))
                .set("Content-Type", "application/json")
                .timeout(Duration::from_secs(300))
                .send_string(body),
        )
    }

    fn get(&self, path: &str) -> (u16, Value) {
        answer(ureq::get(&format!("{}{path}", self.base)).call())
    }

    fn chat(&self, body: &Value) -> Value {
        let (status, answer) = self.post("/v1/chat/completions", &body.to_string());
        assert_eq!(status, 200, "{answer}");
        answer
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    (status, value)
}

/// The content of the first choice.
fn content(answer: &Value) -> String {
    answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// AgentBench v0.2's `check_context_limit`: an HTTP error whose text names a context limit.
fn agentbench_sees_context_limit(text: &str) -> bool {
    let text = text.to_lowercase();
    ["prompt", "context", "tokens"]
        .iter()
        .any(|w| text.contains(w))
        && [
            "limit", "exceed", "max", "long", "much", "many", "reach", "over", "up", "beyond",
        ]
        .iter()
        .any(|w| text.contains(w))
}

/// A conversation as AgentBench's HTTP agent sends it: `role_content_dict`, whose default
/// agent role is `agent`.
fn agentbench_messages(conversation: &Conversation) -> Value {
    conversation
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::Assistant => "agent",
                _ => "user",
            };
            json!({"role": role, "content": m.content})
        })
        .collect()
}

#[test]
fn serves_agentbench_openai_and_concurrent_clients() {
    let Some(server) = Server::start() else {
        return;
    };

    let (status, models) = server.get("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(models["data"][0]["id"], "abt-serve");

    // A DB Bench episode played through the server, each request shaped as AgentBench v0.2's
    // HTTP agent sends it; the first reply equals the model's in-process greedy reply.
    let item = DbItem::read_jsonl(&common::dbbench_dev())
        .unwrap()
        .remove(0);
    let mut env = DbEnv::new(item.clone());
    let mut conversation = env.reset().unwrap();
    let model_path = common::default_model().unwrap();
    let local = ChatModel::load(
        &ModelSource::Gguf(model_path),
        None,
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )
    .unwrap();
    let expected = local
        .reply(
            &conversation,
            &GenerateOptions {
                progress: false,
                ..GenerateOptions::greedy(512)
            },
        )
        .unwrap()
        .text;
    let mut served = Vec::new();
    for _ in 0..2 {
        let body = json!({
            "model": "abt-serve", "temperature": 0, "max_tokens": 512,
            "messages": agentbench_messages(&conversation),
        });
        let reply = content(&server.chat(&body));
        served.push(reply.clone());
        let message = Message::assistant(reply);
        conversation.push(message.clone());
        let step = env.step(&message).unwrap();
        if step.done {
            break;
        }
        conversation.messages.extend(step.observation);
    }
    assert_eq!(served[0], expected, "served vs in-process reply");

    // the function-calling protocol: tools offered, tool calls (if any) in OpenAI's form
    let mut env = DbEnv::new(item).with_protocol(Protocol::Tools);
    let conversation = env.reset().unwrap();
    assert!(!conversation.tools.is_empty());
    let body = json!({
        "model": "abt-serve", "temperature": 0, "max_tokens": 128,
        "messages": conversation.messages, "tools": conversation.tools,
    });
    let answer = server.chat(&body);
    let message = &answer["choices"][0]["message"];
    assert!(message["content"].is_string() || message["tool_calls"].is_array());
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        assert!(call["function"]["arguments"].is_string(), "{call}");
    }

    // bad requests: the right 4xx and an OpenAI error body, never a crash
    let (status, e) = server.post("/v1/chat/completions", "{\"messages\": [");
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
    let hello = json!([{"role": "user", "content": "hello"}]);
    let (status, e) = server.post(
        "/v1/chat/completions",
        &json!({"model": "gpt-4o", "messages": hello}).to_string(),
    );
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    let long = json!([{"role": "user", "content": "word ".repeat(20_000)}]);
    let (status, e) = server.post(
        "/v1/chat/completions",
        &json!({"model": "abt-serve", "messages": long, "max_tokens": 512}).to_string(),
    );
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("context_length_exceeded"))
    );
    assert!(agentbench_sees_context_limit(&e.to_string()), "{e}");
    let (status, e) = server.post(
        "/v1/chat/completions",
        &json!({"messages": hello, "n": 0}).to_string(),
    );
    assert_eq!((status, e["error"]["param"].as_str()), (400, Some("n")));
    assert_eq!(server.get("/v1/nothing").0, 404);
    assert_eq!(server.get("/v1/chat/completions").0, 405);

    // 50 concurrent clients: all answered, in fewer batches than requests, and each greedy
    // answer equals the one the same request gets alone
    let batches = |s: &Server| s.get("/health").1["batches"].as_u64().unwrap();
    let before = batches(&server);
    let request = |i: usize| {
        json!({
            "model": "abt-serve", "temperature": 0, "max_tokens": 6,
            "messages": [{"role": "user", "content": format!("Say the number {i}.")}],
        })
    };
    let answers: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let (server, body) = (&server, request(i));
                scope.spawn(move || content(&server.chat(&body)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let used = batches(&server) - before;
    assert!(used < 50, "50 concurrent requests ran in {used} batches");
    for i in [0, 17, 49] {
        assert_eq!(
            content(&server.chat(&request(i))),
            answers[i],
            "request {i}"
        );
    }

    // the openai Python client (installed in .venv by scripts/setup.sh)
    if let Some(python) = python_with_openai() {
        let out = Command::new(python)
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/serve_openai.py"))
            .arg(format!("{}/v1", server.base))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openai client test failed:\n{}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(server.log.path()).unwrap_or_default()
        );
    }
}

/// `.venv/bin/python` with `openai` importable; `None` (skipped) on a developer machine
/// without the venv, a failure under CI.
fn python_with_openai() -> Option<PathBuf> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let ok = python.is_file()
        && Command::new(&python)
            .args(["-c", "import openai"])
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI needs the openai package in .venv (bash scripts/setup.sh)"
    );
    eprintln!("skipped the openai client: no .venv with openai (bash scripts/setup.sh)");
    None
}

#[test]
fn sigterm_drains_requests_in_flight() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let body = json!({
        "model": "abt-serve", "temperature": 0, "max_tokens": 64,
        "messages": [{"role": "user", "content": "Tell me a story about a lighthouse."}],
    });
    std::thread::scope(|scope| {
        let server_ref = &server;
        let in_flight = scope.spawn(move || server_ref.chat(&body));
        // wait until the request is in the server (the health check counts itself too)
        let start = Instant::now();
        while server.get("/health").1["in_flight"].as_u64().unwrap() < 2 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "request never arrived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = server.child.id() as libc::pid_t;
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let answer = in_flight.join().unwrap();
        assert!(
            answer["usage"]["completion_tokens"].as_u64() > Some(0),
            "{answer}"
        );
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let log = std::fs::read_to_string(server.log.path()).unwrap();
    assert!(log.contains("finishing 1 request(s) in flight"), "{log}");
    assert!(
        ureq::get(&format!("{}/health", server.base))
            .call()
            .is_err()
    );
}
