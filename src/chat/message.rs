//! Conversations in the OpenAI `messages` format: roles, tool definitions, tool calls, results.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the whole conversation (OpenAI's newer `developer` reads as this).
    #[serde(alias = "developer")]
    System,
    /// The human (or the environment, in agent protocols that speak as the user).
    User,
    /// The model (AgentBench's default prompter calls it `agent`).
    #[serde(alias = "agent")]
    Assistant,
    /// The result of a tool call.
    Tool,
}

impl Role {
    /// The role's name as templates see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One call of a tool by the assistant.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call's id, echoed by the tool result's `tool_call_id`.
    pub id: Option<String>,
    /// The function's name.
    pub name: String,
    /// The arguments: a JSON object (what transformers' templates expect), or the JSON
    /// string OpenAI's API sends.
    ///
    /// Kept as given, because templates differ on strings: Qwen3 prints one verbatim, Qwen2.5
    /// encodes it again with `tojson`. [`ToolCall::parsed_arguments`] reads either form.
    pub arguments: Value,
}

impl ToolCall {
    /// A call of `name` with `arguments`.
    pub fn new(name: impl Into<String>, arguments: Value) -> Self {
        Self {
            id: None,
            name: name.into(),
            arguments,
        }
    }

    /// The arguments as a compact JSON string (OpenAI's wire form).
    pub fn arguments_json(&self) -> String {
        match &self.arguments {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }

    /// The arguments as a JSON value, parsing the string form; `None` if a string is not JSON.
    pub fn parsed_arguments(&self) -> Option<Value> {
        match &self.arguments {
            Value::String(s) => serde_json::from_str(s).ok(),
            v => Some(v.clone()),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Serialize, Deserialize)]
struct WireToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "type", default = "function_type")]
    kind: String,
    function: WireFunction,
}

fn function_type() -> String {
    "function".into()
}

impl Serialize for ToolCall {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireToolCall {
            id: self.id.clone(),
            kind: function_type(),
            function: WireFunction {
                name: self.name.clone(),
                arguments: self.arguments.clone(),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ToolCall {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = WireToolCall::deserialize(d)?;
        let arguments = match wire.function.arguments {
            Value::Null => Value::Object(Map::new()),
            v => v,
        };
        Ok(Self {
            id: wire.id,
            name: wire.function.name,
            arguments,
        })
    }
}

/// A tool the model may call, as an OpenAI tool definition
/// (`{"type": "function", "function": {"name", "description", "parameters"}}`).
///
/// The JSON is kept as given, key order included: templates print it with `tojson`, so any
/// change would change the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tool(pub Value);

impl Tool {
    /// A function tool with a JSON-schema `parameters` object.
    pub fn function(name: &str, description: &str, parameters: Value) -> Self {
        Tool(json!({
            "type": "function",
            "function": {"name": name, "description": description, "parameters": parameters}
        }))
    }

    /// The function's name, if the definition has one.
    pub fn name(&self) -> Option<&str> {
        self.0
            .get("function")
            .unwrap_or(&self.0)
            .get("name")
            .and_then(Value::as_str)
    }
}

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

/// `null` content (an assistant turn that only calls tools) reads as empty text.
fn content_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<Part>),
        Null(()),
    }
    #[derive(Deserialize)]
    struct Part {
        #[serde(default)]
        text: String,
    }
    Ok(match Content::deserialize(d)? {
        Content::Text(s) => s,
        Content::Parts(parts) => parts.into_iter().map(|p| p.text).collect(),
        Content::Null(()) => String::new(),
    })
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// The text (text parts of a multi-part OpenAI content are joined).
    #[serde(default, deserialize_with = "content_or_empty")]
    pub content: String,
    /// The model's reasoning before the answer (Qwen3 thinking), when kept apart from content
    /// (also read from `reasoning` or `thinking`, as transformers does).
    #[serde(
        default,
        alias = "reasoning",
        alias = "thinking",
        skip_serializing_if = "Option::is_none"
    )]
    pub reasoning_content: Option<String>,
    /// Tools the assistant calls in this turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool result: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a tool result: the tool's name (some templates print it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether an assistant turn is trained on (false for, e.g., the mistaken turn of a negative
    /// sample); other roles are never trained on. Not part of OpenAI's format; written only
    /// when false.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub train: bool,
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            reasoning_content: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            train: true,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// A tool result answering the call with `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(tool_call_id.into()),
            ..Self::new(Role::Tool, content)
        }
    }

    /// This message with tool calls added.
    pub fn with_tool_calls(mut self, calls: Vec<ToolCall>) -> Self {
        self.tool_calls = calls;
        self
    }

    /// This message with reasoning content.
    pub fn with_reasoning(mut self, reasoning: impl Into<String>) -> Self {
        self.reasoning_content = Some(reasoning.into());
        self
    }

    /// This message marked as not trained on (see [`Message::train`]).
    pub fn not_for_training(mut self) -> Self {
        self.train = false;
        self
    }

    /// The message as a chat template sees it (transformers' dict form: tool-call arguments
    /// parsed, absent fields left out).
    pub(crate) fn template_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("role".into(), self.role.as_str().into());
        m.insert("content".into(), self.content.clone().into());
        // transformers hands templates the reasoning under both names.
        if let Some(r) = &self.reasoning_content {
            m.insert("reasoning_content".into(), r.clone().into());
            m.insert("thinking".into(), r.clone().into());
        }
        if !self.tool_calls.is_empty() {
            let calls = self
                .tool_calls
                .iter()
                .map(|c| {
                    let mut call = Map::new();
                    if let Some(id) = &c.id {
                        call.insert("id".into(), id.clone().into());
                    }
                    call.insert("type".into(), "function".into());
                    call.insert(
                        "function".into(),
                        json!({"name": c.name, "arguments": c.arguments}),
                    );
                    Value::Object(call)
                })
                .collect();
            m.insert("tool_calls".into(), Value::Array(calls));
        }
        if let Some(id) = &self.tool_call_id {
            m.insert("tool_call_id".into(), id.clone().into());
        }
        if let Some(name) = &self.name {
            m.insert("name".into(), name.clone().into());
        }
        Value::Object(m)
    }
}

/// A conversation: messages plus the tools offered to the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// Tools the model may call (rendered into the prompt by templates that support them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
}

impl Conversation {
    /// A conversation of `messages` without tools.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            tools: Vec::new(),
        }
    }

    /// This conversation with tools offered.
    pub fn with_tools(mut self, tools: Vec<Tool>) -> Self {
        self.tools = tools;
        self
    }

    /// Appends a message.
    pub fn push(&mut self, message: Message) {
        self.messages.push(message);
    }

    /// Reads a conversation from OpenAI JSON: either `{"messages": [...], "tools": [...]}` or a
    /// bare `[...]` of messages.
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        let value: Value = serde_json::from_str(text)?;
        if value.is_array() {
            Ok(Self::new(serde_json::from_value(value)?))
        } else {
            serde_json::from_value(value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_json_round_trips_with_either_argument_form() {
        let text = r#"{"messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",
              "function":{"name":"sql","arguments":"{\"q\": \"SELECT 1\"}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"1"}],
            "tools":[{"type":"function","function":{"name":"sql","parameters":{}}}]}"#;
        let conv = Conversation::from_json(text).unwrap();
        assert_eq!(conv.messages[1].content, "ab");
        assert_eq!(conv.messages[2].content, "");
        let call = &conv.messages[2].tool_calls[0];
        assert_eq!(call.arguments, json!("{\"q\": \"SELECT 1\"}"));
        assert_eq!(call.parsed_arguments(), Some(json!({"q": "SELECT 1"})));
        assert_eq!(conv.tools[0].name(), Some("sql"));
        let out = serde_json::to_value(&conv).unwrap();
        assert_eq!(
            out["messages"][2]["tool_calls"][0]["function"]["arguments"],
            json!("{\"q\": \"SELECT 1\"}")
        );
        assert!(out["messages"][0].get("train").is_none());
        let back: Conversation = serde_json::from_value(out).unwrap();
        assert_eq!(back, conv);
    }

    #[test]
    fn train_flag_is_written_only_when_false() {
        let m = Message::assistant("x").not_for_training();
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["train"], json!(false));
        let back: Message = serde_json::from_value(v).unwrap();
        assert!(!back.train);
        let bare = Conversation::from_json(r#"[{"role":"user","content":"hi"}]"#).unwrap();
        assert!(bare.messages[0].train);
    }

    #[test]
    fn template_value_keeps_parsed_arguments_and_omits_absent_fields() {
        let m = Message::assistant("")
            .with_tool_calls(vec![ToolCall::new("f", json!({"b": 1, "a": 2}))]);
        let v = m.template_value();
        assert!(v.get("reasoning_content").is_none());
        assert_eq!(
            v["tool_calls"][0]["function"]["arguments"].to_string(),
            r#"{"b":1,"a":2}"#
        );
    }
}
