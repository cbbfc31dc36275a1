//! Conversations, chat templates and tokenisation with assistant-only loss masks.
//!
//! - [`message`]: messages, tool definitions and tool calls in the OpenAI `messages` format.
//! - [`template`]: the model's own Jinja chat template, rendered as transformers does.
//! - [`tokenizer`]: the model's tokenizer (`tokenizer.json` or GGUF metadata) and template.
//! - [`tool_parse`]: `<tool_call>` blocks in generated text read back into tool calls.
//! - [`encode`]: a conversation → ids + a mask that is 1 exactly on assistant-written tokens.

pub mod encode;
pub mod message;
pub mod template;
pub mod tokenizer;
pub mod tool_parse;

pub use encode::{EncodeOptions, EncodedConversation, Truncation, TurnSpan};
pub use message::{Conversation, Message, Role, Tool, ToolCall};
pub use template::{ChatTemplate, RenderOptions};
pub use tokenizer::Tokenizer;
pub use tool_parse::{assistant_message, parse_tool_calls};
