//! One worker thread owns the model: it gathers the requests that arrive together and
//! generates their replies as one batch per set of generation options.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::api::{ApiError, ChatRequest};
use crate::generate::{ChatModel, GenerateOptions, Generation, generate};

/// How the worker batches.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// Most sequences generated together (a request with `n` choices counts `n`).
    pub max_batch: usize,
    /// How long the worker waits for more requests after the first one of a batch.
    pub wait: Duration,
    /// Most tokens per sequence, prompt and completion together.
    pub max_context: usize,
    /// New tokens of a request that sets no `max_tokens` (capped by the context left).
    pub default_max_tokens: usize,
}

/// The replies to one request.
#[derive(Debug, Clone)]
pub struct Answer {
    /// One generation per choice.
    pub generations: Vec<Generation>,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
}

/// A request waiting for the worker, with the channel its answer goes back on.
pub struct Job {
    /// The checked request.
    pub request: ChatRequest,
    /// Where the answer goes.
    pub reply: Sender<Result<Answer, ApiError>>,
}

/// What the worker has done, for `GET /health`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Generation batches run.
    pub batches: AtomicU64,
    /// Sequences generated (one per choice).
    pub sequences: AtomicU64,
}

/// A job whose prompt is encoded and fits the context.
struct Ready {
    job: Job,
    prompt: Vec<u32>,
    options: GenerateOptions,
}

/// Runs until every sender of `jobs` is dropped: takes the first waiting job, gathers more
/// for up to `config.wait` (at most `max_batch` sequences), then generates each group of
/// jobs that share their options as one batch. Greedy replies equal unbatched ones.
pub fn run_worker(model: ChatModel, jobs: Receiver<Job>, config: BatchConfig, stats: &Stats) {
    while let Ok(first) = jobs.recv() {
        let mut batch = Vec::new();
        let mut rows = 0;
        if let Some(ready) = prepare(&model, first, &config) {
            rows += ready.job.request.n;
            batch.push(ready);
        }
        let deadline = Instant::now() + config.wait;
        while rows < config.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match jobs.recv_timeout(left) {
                Ok(job) => {
                    if let Some(ready) = prepare(&model, job, &config) {
                        rows += ready.job.request.n;
                        batch.push(ready);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        while !batch.is_empty() {
            // the first job's options, and every other job with the same ones
            let options = batch[0].options.clone();
            let (group, rest): (Vec<Ready>, Vec<Ready>) =
                batch.into_iter().partition(|r| r.options == options);
            batch = rest;
            stats.batches.fetch_add(1, Ordering::Relaxed);
            let sequences: usize = group.iter().map(|r| r.job.request.n).sum();
            stats
                .sequences
                .fetch_add(sequences as u64, Ordering::Relaxed);
            run_group(&model, group, &options);
        }
    }
}

/// Encodes a job's prompt and settles its token budget; a job that cannot run is answered
/// here (`None`).
fn prepare(model: &ChatModel, job: Job, config: &BatchConfig) -> Option<Ready> {
    let request = &job.request;
    let mut render = model.render.clone();
    if let Some(on) = request.enable_thinking {
        render.enable_thinking = Some(on);
    }
    let prompt = match model
        .tokenizer
        .encode_prompt(&request.conversation, &render)
    {
        Ok(p) => p,
        Err(e) => {
            let _ = job.reply.send(Err(ApiError::invalid(
                Some("messages"),
                format!("the messages cannot be rendered with this model's chat template: {e}"),
            )));
            return None;
        }
    };
    let left = config.max_context.saturating_sub(prompt.len());
    let wanted = match request.options.max_new_tokens {
        0 => config.default_max_tokens.min(left),
        m => m,
    };
    if wanted == 0 || prompt.len() + wanted > config.max_context {
        let wanted = wanted.max(1);
        let _ = job.reply.send(Err(ApiError::context_length(
            config.max_context,
            prompt.len(),
            wanted,
        )));
        return None;
    }
    let options = GenerateOptions {
        max_new_tokens: wanted,
        ..request.options.clone()
    };
    Some(Ready {
        job,
        prompt,
        options,
    })
}

/// Generates every choice of every job in `group` as one batch and answers each job.
fn run_group(model: &ChatModel, group: Vec<Ready>, options: &GenerateOptions) {
    let prompts: Vec<Vec<u32>> = group
        .iter()
        .flat_map(|r| std::iter::repeat_n(r.prompt.clone(), r.job.request.n))
        .collect();
    let result = catch_unwind(AssertUnwindSafe(|| {
        generate(&model.decoder, &model.tokenizer, &prompts, options)
    }));
    let mut generations = match result {
        Ok(Ok(g)) => g.into_iter(),
        Ok(Err(e)) => return fail(group, &format!("generation failed: {e}")),
        Err(_) => return fail(group, "generation panicked (a bug: please report it)"),
    };
    for ready in group {
        let mine: Vec<Generation> = generations.by_ref().take(ready.job.request.n).collect();
        let _ = ready.job.reply.send(Ok(Answer {
            generations: mine,
            prompt_tokens: ready.prompt.len(),
        }));
    }
}

fn fail(group: Vec<Ready>, message: &str) {
    for ready in group {
        let _ = ready.job.reply.send(Err(ApiError::server(500, message)));
    }
}
