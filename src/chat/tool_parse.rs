//! Tool calls written as text: the `<tool_call>{"name": …, "arguments": …}</tool_call>` blocks
//! that Qwen2.5/Qwen3 (Hermes format) emit, read back into [`ToolCall`]s as an
//! OpenAI-compatible server's tool parser would.

use serde_json::Value;

use super::message::{Message, ToolCall};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// Splits generated text into its plain content and the tool calls in it.
///
/// A block whose JSON does not parse, or has no `name`, is not a call: it stays in the
/// content, as a server would leave it. Calls get ids `call_0`, `call_1`, ….
pub fn parse_tool_calls(text: &str) -> (String, Vec<ToolCall>) {
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(OPEN) {
        content.push_str(&rest[..at]);
        let body_start = at + OPEN.len();
        let (body, after) = match rest[body_start..].find(CLOSE) {
            Some(end) => (
                &rest[body_start..body_start + end],
                &rest[body_start + end + CLOSE.len()..],
            ),
            // An unclosed block at the end (generation stopped at </tool_call> or ran out).
            None => (&rest[body_start..], ""),
        };
        match call_from_json(body.trim(), calls.len()) {
            Some(call) => calls.push(call),
            None => content.push_str(&rest[at..rest.len() - after.len()]),
        }
        rest = after;
    }
    content.push_str(rest);
    (content.trim().to_string(), calls)
}

fn call_from_json(body: &str, index: usize) -> Option<ToolCall> {
    let value: Value = serde_json::from_str(body).ok()?;
    let name = value.get("name")?.as_str()?.to_string();
    let arguments = value
        .get("arguments")
        .or_else(|| value.get("parameters"))
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    Some(ToolCall {
        id: Some(format!("call_{index}")),
        name,
        arguments,
    })
}

/// An assistant message from generated text, with its tool calls parsed out.
pub fn assistant_message(text: &str) -> Message {
    let (content, calls) = parse_tool_calls(text);
    if calls.is_empty() {
        Message::assistant(text)
    } else {
        Message::assistant(content).with_tool_calls(calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hermes_blocks_become_calls() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"execute_sql\", \"arguments\": {\"query\": \"SELECT 1\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"commit_final_answer\", \"arguments\": {\"answers\": [\"1\"]}}\n</tool_call>";
        let (content, calls) = parse_tool_calls(text);
        assert_eq!(content, "Let me check.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "execute_sql");
        assert_eq!(calls[0].arguments, json!({"query": "SELECT 1"}));
        assert_eq!(calls[1].id.as_deref(), Some("call_1"));
    }

    #[test]
    fn broken_blocks_stay_in_the_content() {
        let text = "<tool_call>\n{\"name\": \"execute_sql\", \"arguments\": {\n</tool_call>";
        let (content, calls) = parse_tool_calls(text);
        assert!(calls.is_empty());
        assert_eq!(content, text);
        // unclosed but complete JSON (generation stopped before the closing tag)
        let (_, calls) = parse_tool_calls("<tool_call>{\"name\": \"f\", \"arguments\": {}}");
        assert_eq!(calls.len(), 1);
        let m = assistant_message("no calls here");
        assert!(m.tool_calls.is_empty() && m.content == "no calls here");
    }
}
