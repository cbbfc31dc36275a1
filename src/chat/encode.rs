//! A conversation → token ids plus a loss mask that is 1 exactly on assistant-written tokens.
//!
//! The whole conversation is rendered once with the model's template. Each assistant turn is
//! then located in that text: it starts after `render(messages[..i])` plus the part of the
//! generation prompt (`<|im_start|>assistant\n`) the text repeats, and ends with the first
//! end-of-turn token after it (included: the model must learn to stop). Tokens that overlap
//! a trained turn get mask 1. A template whose earlier output changes when later
//! messages are added is reported, never guessed around.

use serde::{Deserialize, Serialize};

use super::message::{Conversation, Role};
use super::template::RenderOptions;
use super::tokenizer::Tokenizer;
use crate::error::{Error, Result};

/// What to do when an encoded conversation is longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Truncation {
    /// Fail with an error naming the length.
    #[default]
    Error,
    /// Keep the longest prefix that ends at the end of an assistant turn; later turns are
    /// dropped and counted in [`EncodedConversation::dropped_turns`].
    DropTurns,
}

/// How a conversation is encoded for training.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodeOptions {
    /// Template options (the generation prompt is always off here).
    pub render: RenderOptions,
    /// Longest allowed sequence in tokens.
    pub max_len: Option<usize>,
    /// What happens beyond `max_len`.
    pub truncation: Truncation,
}

/// One assistant turn inside the encoded text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnSpan {
    /// Index of the message in the conversation.
    pub message: usize,
    /// Byte range of what the model writes (end-of-turn token included).
    pub bytes: (usize, usize),
    /// Token range covered.
    pub tokens: (usize, usize),
    /// Whether the turn is trained on.
    pub trained: bool,
}

/// A conversation as the model sees it in training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodedConversation {
    /// The rendered text.
    pub text: String,
    /// Token ids.
    pub ids: Vec<u32>,
    /// 1 on tokens of trained assistant turns, 0 elsewhere; same length as `ids`.
    pub mask: Vec<u8>,
    /// Every assistant turn kept, trained or not.
    pub turns: Vec<TurnSpan>,
    /// Assistant turns dropped by truncation.
    pub dropped_turns: usize,
}

impl EncodedConversation {
    /// Number of tokens with loss.
    pub fn num_trained(&self) -> usize {
        self.mask.iter().filter(|&&m| m == 1).count()
    }
}

/// Length in bytes of the longest common prefix of `a` and `b`, on a char boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

impl Tokenizer {
    /// Renders and tokenises `conversation` with a per-token loss mask on assistant turns
    /// (turns with `train: false` are not masked in).
    pub fn encode_conversation(
        &self,
        conversation: &Conversation,
        options: &EncodeOptions,
    ) -> Result<EncodedConversation> {
        let template = self.template()?;
        let msgs = &conversation.messages;
        let tools = &conversation.tools;
        let plain = RenderOptions {
            add_generation_prompt: false,
            ..options.render.clone()
        };
        let generation = RenderOptions {
            add_generation_prompt: true,
            ..options.render.clone()
        };
        let text = template.render(msgs, tools, &plain)?;
        let eos = template.eos_token();
        let mut spans = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            if m.role != Role::Assistant {
                continue;
            }
            let before = if i == 0 {
                String::new()
            } else {
                template.render(&msgs[..i], tools, &plain)?
            };
            if !text.starts_with(&before) {
                return Err(Error::Chat(format!(
                    "the chat template renders messages 0..{i} differently once later messages \
                     follow, so assistant turn {i} cannot be located"
                )));
            }
            let prompt = if i == 0 {
                String::new()
            } else {
                template.render(&msgs[..i], tools, &generation)?
            };
            let header = prompt.strip_prefix(before.as_str()).unwrap_or("");
            let start = before.len() + common_prefix(header, &text[before.len()..]);
            let rest = &text[start..];
            let end = match eos.and_then(|e| rest.find(e).map(|p| p + e.len())) {
                Some(n) => start + n,
                None => {
                    let through = template.render(&msgs[..=i], tools, &plain)?;
                    if text.starts_with(&through) {
                        through.len()
                    } else {
                        text.len()
                    }
                }
            };
            spans.push(TurnSpan {
                message: i,
                bytes: (start, end),
                tokens: (0, 0),
                trained: m.train,
            });
        }
        let enc = self.encode_with_offsets(&text)?;
        let mut mask = vec![0u8; enc.ids.len()];
        for span in &mut spans {
            let (s, e) = span.bytes;
            // Tokens overlapping the turn, as transformers' assistant masks: a token that
            // straddles the header and the reply (`\n` + `\n` → `\n\n`) is the model's too.
            let first = enc.offsets.partition_point(|o| o.1 <= s);
            let last = enc.offsets.partition_point(|o| o.0 < e);
            span.tokens = (first, last);
            if span.trained {
                mask[first..last].iter_mut().for_each(|m| *m = 1);
            }
        }
        let mut out = EncodedConversation {
            text,
            ids: enc.ids,
            mask,
            turns: spans,
            dropped_turns: 0,
        };
        if let Some(max) = options.max_len.filter(|&max| out.ids.len() > max) {
            truncate(&mut out, max, options.truncation, &enc.offsets)?;
        }
        Ok(out)
    }
}

/// Cuts `enc` to at most `max` tokens at the end of an assistant turn.
fn truncate(
    enc: &mut EncodedConversation,
    max: usize,
    mode: Truncation,
    offsets: &[(usize, usize)],
) -> Result<()> {
    let len = enc.ids.len();
    if mode == Truncation::Error {
        return Err(Error::Chat(format!(
            "the conversation is {len} tokens, over the limit of {max}; raise max_len or \
             use Truncation::DropTurns"
        )));
    }
    let keep = enc
        .turns
        .iter()
        .rposition(|t| t.tokens.1 <= max)
        .ok_or_else(|| {
            let first = enc.turns.first().map_or(len, |t| t.tokens.1);
            Error::Chat(format!(
                "the first assistant turn ends at token {first}, beyond the limit of {max}; \
             the conversation cannot be truncated without cutting a turn"
            ))
        })?;
    let cut = enc.turns[keep].tokens.1;
    enc.dropped_turns = enc.turns.len() - keep - 1;
    enc.turns.truncate(keep + 1);
    enc.ids.truncate(cut);
    enc.mask.truncate(cut);
    let text_end = offsets.get(cut - 1).map_or(0, |o| o.1);
    enc.text.truncate(text_end);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_respects_char_boundaries() {
        assert_eq!(common_prefix("abc", "abd"), 2);
        assert_eq!(common_prefix("ab", "abc"), 2);
        assert_eq!(common_prefix("é1", "é2"), 2);
        assert_eq!(common_prefix("", "x"), 0);
    }
}
