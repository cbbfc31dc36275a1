//! The OpenAI chat-completions wire format: requests read and checked, responses and errors
//! written as OpenAI's API (and vLLM's extensions) shape them.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::chat::{Conversation, Message, Tool, parse_tool_calls};
use crate::generate::{FinishReason, GenerateOptions, Generation, Sampling};

/// Most choices (`n`) one request may ask for.
pub const MAX_CHOICES: usize = 16;

/// Most stop strings one request may give (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;

/// An error answered to the client: an HTTP status and OpenAI's
/// `{"error": {"message", "type", "param", "code"}}` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status (4xx for the client's mistakes, 5xx for the server's).
    pub status: u16,
    /// OpenAI's error type (`invalid_request_error`, `not_found_error`, `server_error`, …).
    pub kind: &'static str,
    /// A machine-readable code (`context_length_exceeded`, `model_not_found`, …).
    pub code: Option<&'static str>,
    /// The request field at fault.
    pub param: Option<String>,
    /// What went wrong and how to fix it.
    pub message: String,
}

impl ApiError {
    /// A 400 about the request, naming the field at fault.
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            kind: "invalid_request_error",
            code: None,
            param: param.map(str::to_string),
            message: message.into(),
        }
    }

    /// A 404 for a path or model that does not exist.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 404,
            kind: "not_found_error",
            code: Some(code),
            param: None,
            message: message.into(),
        }
    }

    /// A 5xx: the server failed, the request may be retried.
    pub fn server(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            kind: "server_error",
            code: None,
            param: None,
            message: message.into(),
        }
    }

    /// The 400 for a prompt plus completion longer than the model's context, phrased as
    /// OpenAI phrases it, which AgentBench's HTTP agent recognises as a context limit (it looks
    /// for "context"/"tokens" with "maximum"/"exceed") and ends the task as such.
    pub fn context_length(max_context: usize, prompt: usize, completion: usize) -> Self {
        Self {
            code: Some("context_length_exceeded"),
            ..Self::invalid(
                Some("messages"),
                format!(
                    "This model's maximum context length is {max_context} tokens. However, you \
                     requested {} tokens ({prompt} in the messages, {completion} in the \
                     completion). Please reduce the length of the messages or completion.",
                    prompt + completion
                ),
            )
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// `stop`: one string or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// The request as sent; unknown fields (`user`, `metadata`, …) are accepted and ignored.
#[derive(Deserialize)]
struct WireRequest {
    model: Option<String>,
    messages: Vec<Message>,
    #[serde(default)]
    tools: Vec<Tool>,
    tool_choice: Option<Value>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    /// vLLM's extension.
    top_k: Option<i64>,
    /// vLLM's extension (transformers' multiplicative penalty).
    repetition_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    stop: Option<Stop>,
    n: Option<usize>,
    seed: Option<u64>,
    #[serde(default)]
    stream: bool,
    /// vLLM's extension: template variables such as `enable_thinking`.
    chat_template_kwargs: Option<Map<String, Value>>,
}

/// A checked chat-completions request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The model asked for, if named.
    pub model: Option<String>,
    /// The messages and the tools offered.
    pub conversation: Conversation,
    /// Sampling, stop strings and seed; `max_new_tokens` is 0 when the request set no limit
    /// (the server's default applies).
    pub options: GenerateOptions,
    /// Choices wanted.
    pub n: usize,
    /// Qwen3's thinking switch, from `chat_template_kwargs.enable_thinking`.
    pub enable_thinking: Option<bool>,
}

/// Reads and checks a `POST /v1/chat/completions` body.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let wire: WireRequest = serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "the body is not valid JSON"
        } else {
            "the body is not a chat-completions request"
        };
        ApiError::invalid(None, format!("{what}: {e}"))
    })?;
    if wire.stream {
        return Err(ApiError::invalid(
            Some("stream"),
            "streaming is not supported by this server; send \"stream\": false",
        ));
    }
    if wire.messages.is_empty() {
        return Err(ApiError::invalid(
            Some("messages"),
            "messages must hold at least one message",
        ));
    }
    let tools = match wire.tool_choice.as_ref() {
        None => wire.tools,
        Some(Value::String(s)) if s == "auto" => wire.tools,
        Some(Value::String(s)) if s == "none" => Vec::new(),
        Some(other) => {
            return Err(ApiError::invalid(
                Some("tool_choice"),
                format!(
                    "tool_choice {other} is not supported; use \"auto\" (the model decides) or \
                     \"none\""
                ),
            ));
        }
    };
    for (name, value) in [
        ("frequency_penalty", wire.frequency_penalty),
        ("presence_penalty", wire.presence_penalty),
    ] {
        if value.is_some_and(|v| v != 0.0) {
            return Err(ApiError::invalid(
                Some(name),
                format!("{name} is not supported; use repetition_penalty (vLLM's) instead"),
            ));
        }
    }
    let temperature = wire.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            Some("temperature"),
            format!("temperature {temperature} must be between 0 and 2"),
        ));
    }
    let top_k = match wire.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => k as usize,
        Some(k) => {
            return Err(ApiError::invalid(
                Some("top_k"),
                format!("top_k {k} must be positive (or -1 for off)"),
            ));
        }
    };
    let sampling = Sampling {
        temperature,
        top_p: wire.top_p.unwrap_or(1.0),
        top_k,
        repetition_penalty: wire.repetition_penalty.unwrap_or(1.0),
    };
    sampling.validate().map_err(|e| {
        let message = e.to_string();
        let param = ["top_p", "repetition_penalty", "temperature"]
            .into_iter()
            .find(|p| message.contains(p));
        ApiError::invalid(param, message)
    })?;
    let max_new_tokens = match wire.max_completion_tokens.or(wire.max_tokens) {
        Some(0) => {
            return Err(ApiError::invalid(
                Some("max_tokens"),
                "max_tokens must be at least 1",
            ));
        }
        Some(m) => m,
        None => 0,
    };
    let stop_strings = match wire.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop_strings.len() > MAX_STOP_STRINGS || stop_strings.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            Some("stop"),
            format!("stop takes at most {MAX_STOP_STRINGS} non-empty strings"),
        ));
    }
    let n = wire.n.unwrap_or(1);
    if !(1..=MAX_CHOICES).contains(&n) {
        return Err(ApiError::invalid(
            Some("n"),
            format!("n {n} must be between 1 and {MAX_CHOICES}"),
        ));
    }
    let enable_thinking = match wire
        .chat_template_kwargs
        .as_ref()
        .and_then(|k| k.get("enable_thinking"))
    {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            return Err(ApiError::invalid(
                Some("chat_template_kwargs"),
                format!("enable_thinking must be true or false, not {other}"),
            ));
        }
    };
    Ok(ChatRequest {
        model: wire.model,
        conversation: Conversation::new(wire.messages).with_tools(tools),
        options: GenerateOptions {
            max_new_tokens,
            sampling,
            seed: wire.seed.unwrap_or(0),
            stop_token_ids: Vec::new(),
            stop_strings,
            progress: false,
            ..GenerateOptions::default()
        },
        n,
        enable_thinking,
    })
}

/// An assistant reply as OpenAI returns it: reasoning (`<think>…</think>`) split off into
/// `reasoning_content`, Hermes `<tool_call>` blocks into `tool_calls` (arguments as JSON
/// strings), and the finish reason.
pub fn choice(index: usize, generation: &Generation, tools_offered: bool) -> Value {
    let (reasoning, text) = split_reasoning(&generation.text);
    let (content, calls) = if tools_offered {
        parse_tool_calls(text)
    } else {
        (text.to_string(), Vec::new())
    };
    let finish = match generation.finish {
        FinishReason::Length => "length",
        _ if !calls.is_empty() => "tool_calls",
        _ => "stop",
    };
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert(
        "content".into(),
        if content.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            content.into()
        },
    );
    if let Some(r) = reasoning {
        message.insert("reasoning_content".into(), r.into());
    }
    if !calls.is_empty() {
        let calls: Vec<Value> = calls
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json()},
                })
            })
            .collect();
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    json!({
        "index": index,
        "message": Value::Object(message),
        "logprobs": null,
        "finish_reason": finish,
    })
}

/// Reasoning before `</think>` (Qwen3 thinking mode) and the answer after it.
fn split_reasoning(text: &str) -> (Option<&str>, &str) {
    match text.find("</think>") {
        Some(end) => {
            let reasoning = text[..end].trim_start();
            let reasoning = reasoning.strip_prefix("<think>").unwrap_or(reasoning);
            (
                Some(reasoning.trim()),
                text[end + "</think>".len()..].trim_start(),
            )
        }
        None => (None, text),
    }
}

/// A whole `chat.completion` response.
pub fn completion(
    id: &str,
    created: u64,
    model: &str,
    generations: &[Generation],
    prompt_tokens: usize,
    tools_offered: bool,
) -> Value {
    let completion_tokens: usize = generations.iter().map(|g| g.ids.len()).sum();
    let choices: Vec<Value> = generations
        .iter()
        .enumerate()
        .map(|(i, g)| choice(i, g, tools_offered))
        .collect();
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    })
}

/// The `GET /v1/models` list of the one model served.
pub fn model_list(model: &str, created: u64) -> Value {
    json!({
        "object": "list",
        "data": [{"id": model, "object": "model", "created": created, "owned_by": "agentbench-tuning"}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Role;

    fn generation(text: &str, finish: FinishReason) -> Generation {
        Generation {
            ids: vec![1, 2, 3],
            logprobs: vec![0.0; 3],
            text: text.into(),
            finish,
        }
    }

    #[test]
    fn agentbench_request_is_read() {
        let body = br#"{"model": "abt-serve", "temperature": 0, "max_tokens": 512,
            "messages": [{"role": "user", "content": "I will ask you a question"},
                         {"role": "agent", "content": "OK."},
                         {"role": "user", "content": "What is 1+1?"}]}"#;
        let r = parse_chat_request(body).unwrap();
        assert_eq!(r.model.as_deref(), Some("abt-serve"));
        assert_eq!(r.conversation.messages[1].role, Role::Assistant);
        assert_eq!(r.options.max_new_tokens, 512);
        assert_eq!(r.options.sampling.temperature, 0.0);
        assert_eq!((r.n, r.options.progress), (1, false));
    }

    #[test]
    fn bad_requests_name_the_field() {
        let param = |body: &str| parse_chat_request(body.as_bytes()).unwrap_err().param;
        assert_eq!(parse_chat_request(b"{not json").unwrap_err().status, 400);
        assert_eq!(param(r#"{"messages": []}"#).as_deref(), Some("messages"));
        let m = r#""messages": [{"role": "user", "content": "hi"}]"#;
        for (field, body) in [
            ("temperature", format!("{{{m}, \"temperature\": 3}}")),
            ("top_p", format!("{{{m}, \"top_p\": 0}}")),
            ("n", format!("{{{m}, \"n\": 0}}")),
            ("max_tokens", format!("{{{m}, \"max_tokens\": 0}}")),
            (
                "stop",
                format!("{{{m}, \"stop\": [\"a\",\"b\",\"c\",\"d\",\"e\"]}}"),
            ),
            ("stream", format!("{{{m}, \"stream\": true}}")),
            (
                "tool_choice",
                format!("{{{m}, \"tool_choice\": \"required\"}}"),
            ),
            (
                "frequency_penalty",
                format!("{{{m}, \"frequency_penalty\": 0.5}}"),
            ),
        ] {
            assert_eq!(param(&body).as_deref(), Some(field), "{body}");
        }
        // a wrong type is a 400 too, not a crash
        let e = parse_chat_request(br#"{"messages": "hi"}"#).unwrap_err();
        assert!(
            e.message.contains("not a chat-completions request"),
            "{e:?}"
        );
    }

    #[test]
    fn tool_calls_come_back_in_openai_form() {
        let text = "<tool_call>\n{\"name\": \"execute_sql\", \"arguments\": {\"query\": \"SELECT 1\"}}\n</tool_call>";
        let c = choice(0, &generation(text, FinishReason::StopToken), true);
        assert_eq!(c["finish_reason"], "tool_calls");
        assert_eq!(c["message"]["content"], Value::Null);
        let call = &c["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "execute_sql");
        // OpenAI sends arguments as a JSON string
        assert_eq!(call["function"]["arguments"], "{\"query\":\"SELECT 1\"}");
        // without tools offered the text stays text
        let c = choice(0, &generation(text, FinishReason::StopToken), false);
        assert_eq!(c["message"]["content"], text);
        assert_eq!(c["finish_reason"], "stop");
        let c = choice(0, &generation("cut", FinishReason::Length), true);
        assert_eq!(c["finish_reason"], "length");
    }

    #[test]
    fn reasoning_is_split_off() {
        let c = choice(
            0,
            &generation("<think>\nsum it\n</think>\n\n2", FinishReason::StopToken),
            false,
        );
        assert_eq!(c["message"]["reasoning_content"], "sum it");
        assert_eq!(c["message"]["content"], "2");
    }

    /// AgentBench's `check_context_limit`: one of the first words and one of the second.
    #[test]
    fn context_errors_read_as_context_limits() {
        let e = ApiError::context_length(2048, 2000, 512);
        let text = e.body().to_string().to_lowercase();
        assert!(
            ["prompt", "context", "tokens"]
                .iter()
                .any(|w| text.contains(w))
        );
        assert!(
            ["limit", "exceed", "max", "long"]
                .iter()
                .any(|w| text.contains(w))
        );
        assert_eq!(e.status, 400);
        assert_eq!(e.body()["error"]["code"], "context_length_exceeded");
    }

    #[test]
    fn usage_counts_every_choice() {
        let g = generation("hi", FinishReason::StopToken);
        let r = completion("chatcmpl-1", 0, "abt-serve", &[g.clone(), g], 10, false);
        assert_eq!(r["usage"]["completion_tokens"], 6);
        assert_eq!(r["usage"]["total_tokens"], 16);
        assert_eq!(r["choices"][1]["index"], 1);
    }
}
