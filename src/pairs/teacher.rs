//! Teacher–student pairs: a stronger model behind any OpenAI-compatible endpoint plays the
//! same tasks as the student; where its episode beats the student's worst, the teacher's is
//! the chosen side and the student's worst the rejected one.
//!
//! The client accepts only whitelisted teacher models by name ([`TEACHER_MODELS`]), spaces its
//! requests to a rate limit, retries transient failures (transport errors, 408, 409, 429 and
//! 5xx, honouring `Retry-After`) with exponential backoff, and caches every answer on disk
//! keyed by the exact request, so a re-run costs nothing and plays identically.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::best_of_n::{PairFilter, Sample};
use super::{Pair, PairSource, PairsReport};
use crate::chat::{Conversation, Message, Role};
use crate::env::{TaskEnv, TaskScore, play};
use crate::error::{Error, Result};
use crate::io::{create_dir_all, read_json, write_json};
use crate::progress::Progress;
use crate::prompts::Prompt;

/// Teacher models accepted by name (a dated snapshot `<name>-YYYY-MM-DD` of one is accepted
/// too): strong instruction-following models whose licences allow training on their outputs
/// through their APIs or open weights, and `abt-serve`, this crate's own server.
pub const TEACHER_MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "deepseek-chat",
    "deepseek-ai/DeepSeek-V3",
    "Qwen/Qwen2.5-72B-Instruct",
    "Qwen/Qwen3-235B-A22B-Instruct-2507",
    "meta-llama/Llama-3.3-70B-Instruct",
    "abt-serve",
];

/// Whether `model` is a whitelisted teacher (or a dated snapshot of one).
pub fn is_teacher_model(model: &str) -> bool {
    TEACHER_MODELS.iter().any(|&name| {
        model == name
            || model.strip_prefix(name).is_some_and(|rest| {
                let date = rest.strip_prefix('-').unwrap_or("");
                date.len() == 10
                    && date.chars().enumerate().all(|(i, c)| {
                        if i == 4 || i == 7 {
                            c == '-'
                        } else {
                            c.is_ascii_digit()
                        }
                    })
            })
    })
}

/// Where the teacher is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherConfig {
    /// The API's base URL (`https://api.openai.com/v1`; requests go to
    /// `<url>/chat/completions`).
    pub url: String,
    /// The teacher model (one of [`TEACHER_MODELS`]).
    pub model: String,
    /// The environment variable holding the API key (none is sent when it is unset).
    pub api_key_env: String,
    /// Sampling temperature (0: the teacher's best answer, reproducible).
    pub temperature: f32,
    /// Most tokens per reply.
    pub max_tokens: usize,
    /// Most requests a minute (cache hits excluded).
    pub requests_per_minute: u32,
    /// Retries of a transient failure before giving up.
    pub max_retries: u32,
    /// First backoff in seconds, doubled each retry (at most 60).
    pub backoff_s: f64,
    /// Seconds a request may take.
    pub timeout_s: u64,
    /// Most replies per DB episode.
    pub db_turns: usize,
    /// Most replies per household episode.
    pub household_turns: usize,
    /// The answer cache (`None`: `04_pairs/teacher_cache` of the run).
    pub cache_dir: Option<PathBuf>,
}

impl Default for TeacherConfig {
    fn default() -> Self {
        Self {
            url: "https://api.openai.com/v1".into(),
            model: "gpt-4o-mini".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            temperature: 0.0,
            max_tokens: 512,
            requests_per_minute: 60,
            max_retries: 5,
            backoff_s: 1.0,
            timeout_s: 120,
            db_turns: 8,
            household_turns: 20,
            cache_dir: None,
        }
    }
}

/// Requests, cache hits and retries of a client so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeacherStats {
    /// Requests sent (retries included).
    pub requests: usize,
    /// Answers served from the cache.
    pub cache_hits: usize,
    /// Retries after a transient failure.
    pub retries: usize,
}

/// A cached answer: the request it answers and the reply.
#[derive(Debug, Serialize, Deserialize)]
struct CachedAnswer {
    request: Value,
    reply: Message,
}

/// A chat-completions client for a teacher model.
#[derive(Debug)]
pub struct TeacherClient {
    config: TeacherConfig,
    cache_dir: PathBuf,
    agent: ureq::Agent,
    key: Option<String>,
    last_request: Option<Instant>,
    stats: TeacherStats,
}

impl TeacherClient {
    /// A client for `config`, caching in `config.cache_dir` or else `default_cache`; refuses a
    /// model that is not a whitelisted teacher.
    pub fn new(config: TeacherConfig, default_cache: PathBuf) -> Result<Self> {
        if !is_teacher_model(&config.model) {
            return Err(Error::Teacher {
                endpoint: config.url.clone(),
                reason: format!(
                    "model {:?} is not an accepted teacher; accepted: {}",
                    config.model,
                    TEACHER_MODELS.join(", ")
                ),
            });
        }
        let cache_dir = config.cache_dir.clone().unwrap_or(default_cache);
        create_dir_all(&cache_dir)?;
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(config.timeout_s.max(1)))
            .build();
        let key = std::env::var(&config.api_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        Ok(Self {
            config,
            cache_dir,
            agent,
            key,
            last_request: None,
            stats: TeacherStats::default(),
        })
    }

    /// Requests, cache hits and retries so far.
    pub fn stats(&self) -> TeacherStats {
        self.stats
    }

    fn endpoint(&self) -> String {
        format!("{} · {}", self.config.url, self.config.model)
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Teacher {
            endpoint: self.endpoint(),
            reason: reason.into(),
        }
    }

    /// The request body for a conversation.
    fn request(&self, conversation: &Conversation) -> Result<Value> {
        let mut body = json!({
            "model": self.config.model,
            "messages": serde_json::to_value(&conversation.messages)
                .map_err(|e| self.error(format!("encoding the messages: {e}")))?,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        });
        if !conversation.tools.is_empty() {
            body["tools"] = serde_json::to_value(&conversation.tools)
                .map_err(|e| self.error(format!("encoding the tools: {e}")))?;
        }
        Ok(body)
    }

    /// The teacher's next reply in a conversation: from the cache when this exact request was
    /// answered before, else from the endpoint (rate-limited, retried), then cached.
    pub fn reply(&mut self, conversation: &Conversation) -> Result<Message> {
        use md5::{Digest, Md5};
        let request = self.request(conversation)?;
        let keyed = json!({ "url": self.config.url, "request": request });
        let key = format!("{:x}", Md5::digest(keyed.to_string().as_bytes()));
        let path = self.cache_dir.join(format!("{key}.json"));
        if path.is_file()
            && let Ok(hit) = read_json::<CachedAnswer>(&path)
            && hit.request == request
        {
            self.stats.cache_hits += 1;
            return Ok(hit.reply);
        }
        let reply = self.post(&request)?;
        write_json(
            &path,
            &CachedAnswer {
                request,
                reply: reply.clone(),
            },
        )?;
        Ok(reply)
    }

    /// Waits until the rate limit allows the next request.
    fn pace(&mut self) {
        let gap = Duration::from_secs_f64(60.0 / f64::from(self.config.requests_per_minute.max(1)));
        if let Some(last) = self.last_request {
            let since = last.elapsed();
            if since < gap {
                std::thread::sleep(gap - since);
            }
        }
        self.last_request = Some(Instant::now());
    }

    fn post(&mut self, request: &Value) -> Result<Message> {
        let url = format!("{}/chat/completions", self.config.url.trim_end_matches('/'));
        let mut attempt = 0;
        loop {
            self.pace();
            self.stats.requests += 1;
            let mut call = self
                .agent
                .post(&url)
                .set("Content-Type", "application/json");
            if let Some(key) = &self.key {
                call = call.set("Authorization", &format!("Bearer {key}"));
            }
            let (retry_after, failure) = match call.send_string(&request.to_string()) {
                Ok(response) => {
                    let body = response
                        .into_string()
                        .map_err(|e| self.error(format!("reading the answer: {e}")))?;
                    return self.parse(&body);
                }
                Err(ureq::Error::Status(code, response)) => {
                    let after = response
                        .header("Retry-After")
                        .and_then(|v| v.trim().parse::<f64>().ok());
                    let text = response.into_string().unwrap_or_default();
                    let short: String = text.chars().take(300).collect();
                    if !matches!(code, 408 | 409 | 429 | 500..=599) {
                        let hint = match code {
                            401 | 403 => {
                                format!(" (is the API key in ${} right?)", self.config.api_key_env)
                            }
                            404 => " (is the URL the API's base, e.g. https://api.openai.com/v1?)"
                                .into(),
                            _ => String::new(),
                        };
                        return Err(self.error(format!("HTTP {code}{hint}: {short}")));
                    }
                    (after, format!("HTTP {code}: {short}"))
                }
                Err(e) => (None, e.to_string()),
            };
            if attempt >= self.config.max_retries {
                return Err(self.error(format!(
                    "gave up after {} attempts; last failure: {failure}",
                    attempt + 1
                )));
            }
            let backoff = (self.config.backoff_s * 2f64.powi(attempt as i32)).min(60.0);
            let wait = retry_after.unwrap_or(backoff).clamp(0.0, 60.0);
            println!(
                "teacher: {failure}; retry {} of {} in {wait:.1}s",
                attempt + 1,
                self.config.max_retries
            );
            std::thread::sleep(Duration::from_secs_f64(wait));
            attempt += 1;
            self.stats.retries += 1;
        }
    }

    fn parse(&self, body: &str) -> Result<Message> {
        let value: Value = serde_json::from_str(body)
            .map_err(|e| self.error(format!("the answer is not JSON ({e}): {body:.200}")))?;
        let message = value.pointer("/choices/0/message").ok_or_else(|| {
            self.error(format!("the answer has no choices[0].message: {body:.200}"))
        })?;
        let mut reply: Message = serde_json::from_value(message.clone())
            .map_err(|e| self.error(format!("choices[0].message is not a message: {e}")))?;
        if reply.role != Role::Assistant {
            return Err(self.error(format!("the reply's role is {:?}", reply.role)));
        }
        // Thinking models may return their reasoning apart; the episode keeps the answer.
        reply.reasoning_content = None;
        Ok(reply)
    }

    /// Plays a task to the end with the teacher as the agent.
    pub fn play(&mut self, prompt: &Prompt) -> Result<(Conversation, usize, TaskScore)> {
        let mut env: TaskEnv = prompt.env();
        let turns = match prompt {
            Prompt::Household(_) => self.config.household_turns,
            Prompt::Db(_) => self.config.db_turns,
        };
        let mut failure = None;
        let played = play(&mut env, turns, |conversation| {
            match self.reply(conversation) {
                Ok(m) => Some(m),
                Err(e) => {
                    failure = Some(e);
                    None
                }
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok((played.conversation, played.prompt_messages, env.score()))
    }
}

/// For each prompt of the student's samples (groups of K, as [`super::sample_prompts`] writes
/// them), the teacher plays the task once; its episode is the chosen side and the student's
/// worst the rejected one, kept where the pair filters allow. Returns the pairs, the report
/// (yield, drops, gaps) and the teacher's episodes as samples.
pub fn teacher_pairs(
    client: &mut TeacherClient,
    prompts: &[&Prompt],
    samples: &[Sample],
    filter: &PairFilter,
) -> Result<(Vec<Pair>, PairsReport, Vec<Sample>)> {
    let start = Instant::now();
    let mut report = PairsReport::default();
    let mut pairs = Vec::new();
    let mut teacher_samples = Vec::new();
    let mut progress =
        Progress::new("04 pairs · teacher", Some(prompts.len() as u64)).with_unit("tasks");
    for group in samples.chunk_by(|a, b| a.prompt == b.prompt) {
        let first = &group[0];
        let prompt = first.prompt_in(prompts)?;
        let (conversation, prompt_messages, score) = client.play(prompt)?;
        let teacher = Sample {
            prompt: first.prompt,
            sample: usize::MAX,
            task: first.task.clone(),
            kind: first.kind.clone(),
            protocol: first.protocol,
            score,
            turns: conversation.messages[prompt_messages..]
                .iter()
                .filter(|m| m.role == Role::Assistant)
                .count(),
            end: crate::generate::EpisodeEnd::Done,
            conversation,
            prompt_messages,
        };
        let worst = group
            .iter()
            .min_by(|a, b| a.score.score.total_cmp(&b.score.score))
            .unwrap_or(first);
        let entry = report.sources.entry(first.task.clone()).or_default();
        entry.prompts += 1;
        entry.samples += 1;
        entry.solved += usize::from(teacher.score.success);
        let pair = Pair::of(&teacher, worst, PairSource::Teacher);
        filter.judge(pair, teacher.score.valid, &mut report, &mut pairs);
        teacher_samples.push(teacher);
        progress.inc(1);
        progress.set_message(format!("{} pairs", pairs.len()));
    }
    progress.finish();
    report.seconds = start.elapsed().as_secs_f64();
    Ok((pairs, report, teacher_samples))
}
