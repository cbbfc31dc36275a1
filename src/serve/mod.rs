//! `abt serve`: an OpenAI-compatible HTTP server for the base model plus an adapter, so
//! AgentBench (or any OpenAI client) can evaluate a trained model.
//!
//! Routes: `POST /v1/chat/completions` (non-streaming; `tools` and `tool_calls` in Qwen's
//! Hermes format; `temperature`, `top_p`, `max_tokens`, `stop`, `n`, `seed`), `GET /v1/models`
//! and `GET /health`. Each request is read on its own thread and handed to one worker that owns
//! the model and batches the requests that arrive together ([`batcher`]). Mistakes are
//! answered 4xx with OpenAI's JSON error body, never a crash; a prompt too long for the context
//! gets OpenAI's `context_length_exceeded` wording, which AgentBench treats as a context limit.
//! SIGTERM or SIGINT stops the accepting of requests, finishes those in flight, then returns.

pub mod api;
pub mod batcher;

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub use api::{ApiError, ChatRequest, parse_chat_request};
pub use batcher::BatchConfig;
use batcher::{Answer, Job, Stats};

use crate::error::{Error, Result};
use crate::generate::ChatModel;

/// Where and how the server listens.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Address to bind (`127.0.0.1` for this machine only, `0.0.0.0` for every interface).
    pub host: String,
    /// Port (0: any free port, printed at start).
    pub port: u16,
    /// The model name clients must ask for (`abt-serve` by default, a whitelisted teacher name).
    pub served_name: String,
    /// Batching of concurrent requests.
    pub batch: BatchConfig,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most requests in flight at once; more are answered 503.
    pub max_in_flight: usize,
}

impl ServeConfig {
    /// Defaults for a model with `max_context` tokens of context: `127.0.0.1:8000`, model
    /// `abt-serve`, batches of up to 8 sequences gathered for 20 ms, 512 new tokens unless a
    /// request says otherwise, 8 MiB bodies, 256 requests in flight.
    pub fn new(max_context: usize) -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8000,
            served_name: "abt-serve".into(),
            batch: BatchConfig {
                max_batch: 8,
                wait: Duration::from_millis(20),
                max_context,
                default_max_tokens: 512,
            },
            max_body_bytes: 8 << 20,
            max_in_flight: 256,
        }
    }
}

/// Set by SIGTERM/SIGINT.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// What every request thread shares.
struct Shared {
    served_name: String,
    created: u64,
    max_body_bytes: usize,
    in_flight: AtomicUsize,
    next_id: AtomicU64,
    stats: Arc<Stats>,
}

/// Serves `model` until SIGTERM/SIGINT, then drains the requests in flight and returns.
///
/// Prints `listening on http://HOST:PORT` (with the real port when `config.port` is 0) once the
/// socket is bound, and one line per request to stderr.
pub fn serve(model: ChatModel, config: &ServeConfig) -> Result<()> {
    let server = tiny_http::Server::http((config.host.as_str(), config.port)).map_err(|e| {
        Error::Serve(format!(
            "cannot listen on {}:{}: {e} (is the port in use? try --port)",
            config.host, config.port
        ))
    })?;
    let addr = server.server_addr().to_ip().map_or_else(
        || format!("{}:{}", config.host, config.port),
        |a| a.to_string(),
    );
    install_signal_handlers();
    let (jobs, queue) = mpsc::channel::<Job>();
    let batch = config.batch.clone();
    let stats = Arc::new(Stats::default());
    let worker_stats = Arc::clone(&stats);
    let worker = thread::Builder::new()
        .name("abt-serve-model".into())
        .spawn(move || batcher::run_worker(model, queue, batch, &worker_stats))
        .map_err(|e| Error::Serve(format!("cannot start the model thread: {e}")))?;
    let shared = Arc::new(Shared {
        served_name: config.served_name.clone(),
        created: unix_seconds(),
        max_body_bytes: config.max_body_bytes,
        in_flight: AtomicUsize::new(0),
        next_id: AtomicU64::new(0),
        stats,
    });
    println!(
        "abt serve: listening on http://{addr} (model {:?}; OpenAI base URL http://{addr}/v1)",
        config.served_name
    );
    while !STOP.load(Ordering::SeqCst) {
        let request = match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("abt serve: accepting a request failed: {e}");
                continue;
            }
        };
        if shared.in_flight.load(Ordering::SeqCst) >= config.max_in_flight {
            let busy = ApiError::server(
                503,
                format!(
                    "{} requests are in flight, the most this server takes; retry later",
                    config.max_in_flight
                ),
            );
            respond(request, busy.status, &busy.body());
            continue;
        }
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let (mine, queue) = (Arc::clone(&shared), jobs.clone());
        let spawned = thread::Builder::new()
            .name("abt-serve-request".into())
            .spawn(move || {
                handle(request, &mine, &queue);
                mine.in_flight.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            eprintln!("abt serve: cannot start a request thread: {e}");
            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
    eprintln!(
        "abt serve: stopping; finishing {} request(s) in flight",
        shared.in_flight.load(Ordering::SeqCst)
    );
    while shared.in_flight.load(Ordering::SeqCst) > 0 {
        // answer late arrivals instead of leaving them hanging
        if let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) {
            let closing = ApiError::server(503, "the server is shutting down");
            respond(request, closing.status, &closing.body());
        }
    }
    drop(jobs);
    let _ = worker.join();
    eprintln!("abt serve: stopped");
    Ok(())
}

/// Routes one request and answers it.
fn handle(mut request: tiny_http::Request, shared: &Shared, jobs: &mpsc::Sender<Job>) {
    let start = Instant::now();
    let method = request.method().clone();
    let url = request.url().to_string();
    let path = url.split('?').next().unwrap_or("").trim_end_matches('/');
    let (status, body, note) = match (method.as_str(), path) {
        ("GET", "/v1/models") => (
            200,
            api::model_list(&shared.served_name, shared.created),
            String::new(),
        ),
        ("GET", "/health") => (
            200,
            json!({
                "status": "ok",
                "in_flight": shared.in_flight.load(Ordering::SeqCst),
                "batches": shared.stats.batches.load(Ordering::Relaxed),
                "sequences": shared.stats.sequences.load(Ordering::Relaxed),
            }),
            String::new(),
        ),
        ("POST", "/v1/chat/completions") => match complete(&mut request, shared, jobs) {
            Ok((body, note)) => (200, body, note),
            Err(e) => (e.status, e.body(), e.message.chars().take(120).collect()),
        },
        (_, "/v1/models" | "/health" | "/v1/chat/completions") => {
            let e = ApiError {
                status: 405,
                ..ApiError::invalid(None, format!("{method} is not allowed on {path}"))
            };
            (e.status, e.body(), String::new())
        }
        _ => {
            let e = ApiError::not_found(
                "unknown_url",
                format!(
                    "no route {method} {path}; this server answers POST /v1/chat/completions, \
                     GET /v1/models and GET /health"
                ),
            );
            (e.status, e.body(), String::new())
        }
    };
    respond(request, status, &body);
    eprintln!(
        "abt serve: {method} {path} {status} {:.2}s {note}",
        start.elapsed().as_secs_f64()
    );
}

/// A chat completion: body read and checked, the model's answer awaited.
fn complete(
    request: &mut tiny_http::Request,
    shared: &Shared,
    jobs: &mpsc::Sender<Job>,
) -> std::result::Result<(Value, String), ApiError> {
    let too_large = || ApiError {
        status: 413,
        ..ApiError::invalid(
            None,
            format!(
                "the request body is larger than {} bytes, the most this server accepts",
                shared.max_body_bytes
            ),
        )
    };
    if request
        .body_length()
        .is_some_and(|n| n > shared.max_body_bytes)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(shared.max_body_bytes as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::invalid(None, format!("reading the request body failed: {e}")))?;
    if body.len() > shared.max_body_bytes {
        return Err(too_large());
    }
    let chat = parse_chat_request(&body)?;
    match chat.model.as_deref() {
        Some(m) if m != shared.served_name => {
            return Err(ApiError::not_found(
                "model_not_found",
                format!(
                    "The model `{m}` does not exist; this server serves `{}` (GET /v1/models)",
                    shared.served_name
                ),
            ));
        }
        _ => {}
    }
    let tools_offered = !chat.conversation.tools.is_empty();
    let (reply, answer) = mpsc::channel();
    jobs.send(Job {
        request: chat,
        reply,
    })
    .map_err(|_| ApiError::server(503, "the model thread has stopped"))?;
    let Answer {
        generations,
        prompt_tokens,
    } = answer
        .recv()
        .map_err(|_| ApiError::server(500, "the model thread dropped the request"))??;
    let id = format!(
        "chatcmpl-{}-{}",
        shared.created,
        shared.next_id.fetch_add(1, Ordering::SeqCst)
    );
    let body = api::completion(
        &id,
        unix_seconds(),
        &shared.served_name,
        &generations,
        prompt_tokens,
        tools_offered,
    );
    let completion: usize = generations.iter().map(|g| g.ids.len()).sum();
    Ok((
        body,
        format!("{prompt_tokens} prompt + {completion} completion tokens"),
    ))
}

/// Seconds since the Unix epoch (OpenAI's `created`).
fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes a JSON response; a client that has gone away is not an error worth more than a line.
fn respond(request: tiny_http::Request, status: u16, body: &Value) {
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
        .expect("a constant, valid header");
    let response = tiny_http::Response::from_string(body.to_string())
        .with_status_code(status)
        .with_header(header);
    if let Err(e) = request.respond(response) {
        eprintln!("abt serve: writing a response failed: {e}");
    }
}
