//! An episode as a readable transcript: every turn with its role, reasoning, tool calls and
//! observations, shown inline in a notebook ([`Show`]) or as plain text.
//!
//! ```ignore
//! let episode = &rollout(&model, &tokenizer, &mut envs, &options)?[0];
//! Transcript::from_episode(episode).with_title("household seed 7")
//! ```

use std::fmt::Write as _;

use crate::chat::{Conversation, Message, Role};
use crate::display::{Show, escape_html};
use crate::env::Played;
use crate::generate::Episode;

/// Marker that starts the action list the household appends to observations.
const ACTION_LIST: &str = " AVAILABLE ACTIONS: ";

/// Turns after the opening beyond which the HTML shows only the decisive ones, the rest folded.
const FOLD_LONGER_THAN: usize = 8;

/// A conversation prepared for display.
#[derive(Debug, Clone)]
pub struct Transcript {
    title: Option<String>,
    messages: Vec<Message>,
    folded: usize,
    facts: Vec<(String, String)>,
    all_turns: bool,
}

impl Transcript {
    /// The transcript of a conversation, every message shown.
    pub fn new(conversation: &Conversation) -> Self {
        Self {
            title: None,
            messages: conversation.messages.clone(),
            folded: 0,
            facts: Vec::new(),
            all_turns: false,
        }
    }

    /// A rollout episode: its conversation with the opening folded except its last message
    /// (the task), plus its reward, turns and end.
    pub fn from_episode(episode: &Episode) -> Self {
        Self::new(&episode.conversation)
            .fold_first(episode.prompt_messages.saturating_sub(1))
            .with_fact("reward", format!("{:.3}", episode.reward()))
            .with_fact("turns", episode.turns())
            .with_fact("end", format!("{:?}", episode.end))
            .with_fact("tokens", episode.tokens.len())
    }

    /// An episode played by a scripted policy ([`crate::env::play`], the household expert):
    /// folded like [`Transcript::from_episode`], with its reward and turns.
    pub fn from_played(played: &Played) -> Self {
        Self::new(&played.conversation)
            .fold_first(played.prompt_messages.saturating_sub(1))
            .with_fact("reward", format!("{:.3}", played.reward))
            .with_fact("turns", played.turns)
    }

    /// A heading.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Folds the first `n` messages (instructions, examples) into one collapsed block.
    pub fn fold_first(mut self, n: usize) -> Self {
        self.folded = n.min(self.messages.len());
        self
    }

    /// Shows every turn in the HTML; by default a transcript longer than eight messages after
    /// its opening shows the decisive ones (the first action and its answer, the first error
    /// and the reply that caused it, the end) and folds the rest.
    pub fn all_turns(mut self) -> Self {
        self.all_turns = true;
        self
    }

    /// Which messages after the opening the HTML shows unfolded (indices into them).
    fn decisive(&self) -> Vec<bool> {
        let turns = &self.messages[self.folded..];
        let n = turns.len();
        if self.all_turns || n <= FOLD_LONGER_THAN {
            return vec![true; n];
        }
        let mut keep = vec![false; n];
        let mut mark = |i: usize| {
            if i < n {
                keep[i] = true;
            }
        };
        // The task, the first action and what it got back.
        mark(0);
        if let Some(first) = turns.iter().position(|m| m.role == Role::Assistant) {
            mark(first);
            mark(first + 1);
        }
        // The first error and the reply that caused it.
        let is_error = |m: &Message| {
            let text = split_actions(&m.content).0.to_lowercase();
            m.role != Role::Assistant && (text.contains("error") || text.contains("nothing happen"))
        };
        if let Some(e) = turns.iter().position(is_error) {
            mark(e.saturating_sub(1));
            mark(e);
        }
        // The end: the last reply and what followed it.
        mark(n.saturating_sub(2));
        mark(n - 1);
        keep
    }

    /// Adds a labelled fact to the summary line (reward, status, steps, …).
    pub fn with_fact(mut self, label: impl Into<String>, value: impl ToString) -> Self {
        self.facts.push((label.into(), value.to_string()));
        self
    }

    /// The transcript as plain text: `[role] content` blocks, observations without their
    /// action lists (the count is kept).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some(title) = &self.title {
            let _ = writeln!(out, "== {title} ==");
        }
        if !self.facts.is_empty() {
            let facts: Vec<String> = self
                .facts
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(out, "{}", facts.join(" | "));
        }
        if self.folded > 0 {
            let _ = writeln!(out, "[{} opening messages folded]", self.folded);
        }
        for m in &self.messages[self.folded..] {
            let (body, actions) = split_actions(&m.content);
            let _ = write!(out, "[{}] ", label(m));
            if let Some(reasoning) = m.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
                let _ = write!(out, "(thinking: {}) ", reasoning.trim());
            }
            out.push_str(body.trim_end());
            for call in &m.tool_calls {
                let _ = write!(out, "\n  -> {}({})", call.name, call.arguments_json());
            }
            if let Some(n) = actions {
                let _ = write!(out, "\n  ({n} available actions)");
            }
            out.push('\n');
        }
        out
    }

    /// The transcript as an HTML fragment: one coloured block per turn, the opening and each
    /// action list collapsed.
    pub fn to_html(&self) -> String {
        let mut out = String::from(
            "<div style=\"font-family:system-ui,sans-serif;font-size:13px;max-width:900px\">",
        );
        if let Some(title) = &self.title {
            let _ = write!(
                out,
                "<h4 style=\"margin:4px 0\">{}</h4>",
                escape_html(title)
            );
        }
        if !self.facts.is_empty() {
            out.push_str("<div style=\"margin:4px 0 8px 0\">");
            for (k, v) in &self.facts {
                let _ = write!(
                    out,
                    "<span style=\"margin-right:14px\"><b>{}</b> {}</span>",
                    escape_html(k),
                    escape_html(v)
                );
            }
            out.push_str("</div>");
        }
        if self.folded > 0 {
            let _ = write!(
                out,
                "<details style=\"margin-bottom:6px\"><summary>opening: {} messages</summary>",
                self.folded
            );
            for m in &self.messages[..self.folded] {
                out.push_str(&message_html(m));
            }
            out.push_str("</details>");
        }
        let turns = &self.messages[self.folded..];
        let keep = self.decisive();
        let mut i = 0;
        while i < turns.len() {
            if keep[i] {
                out.push_str(&message_html(&turns[i]));
                i += 1;
                continue;
            }
            let end = (i..turns.len()).find(|&j| keep[j]).unwrap_or(turns.len());
            let _ = write!(
                out,
                "<details style=\"margin:3px 0\"><summary style=\"color:#555\">{} more \
                 messages</summary>",
                end - i
            );
            for m in &turns[i..end] {
                out.push_str(&message_html(m));
            }
            out.push_str("</details>");
            i = end;
        }
        out.push_str("</div>");
        out
    }
}

fn label(m: &Message) -> String {
    match (&m.role, &m.name) {
        (Role::Tool, Some(name)) => format!("tool {name}"),
        (role, _) => role.as_str().to_string(),
    }
}

/// The content without the household's action list, and the list's length.
fn split_actions(content: &str) -> (&str, Option<usize>) {
    match content.find(ACTION_LIST) {
        Some(i) => {
            let list = content[i + ACTION_LIST.len()..].trim_end();
            (&content[..i], Some(list.lines().count()))
        }
        None => (content, None),
    }
}

fn message_html(m: &Message) -> String {
    let (bg, border) = match m.role {
        Role::System => ("#f3f3f3", "#999"),
        Role::User => ("#eef4fb", "#4a7ab5"),
        Role::Assistant => ("#eefaf0", "#3c9a50"),
        Role::Tool => ("#fdf6e9", "#c28a2c"),
    };
    let mut out = format!(
        "<div style=\"background:{bg};border-left:4px solid {border};padding:4px 8px;margin:3px 0\">\
         <div style=\"font-size:11px;color:#555\">{}</div>",
        escape_html(&label(m))
    );
    if let Some(reasoning) = m.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
        let _ = write!(
            out,
            "<details><summary style=\"color:#777\">thinking</summary><pre style=\"white-space:pre-wrap;margin:0;color:#777\">{}</pre></details>",
            escape_html(reasoning.trim())
        );
    }
    let (body, actions) = split_actions(&m.content);
    if !body.trim().is_empty() {
        let _ = write!(
            out,
            "<pre style=\"white-space:pre-wrap;margin:0;font-family:ui-monospace,monospace\">{}</pre>",
            escape_html(body.trim_end())
        );
    }
    for call in &m.tool_calls {
        let _ = write!(
            out,
            "<pre style=\"white-space:pre-wrap;margin:0;color:#7a4b00\">→ {}({})</pre>",
            escape_html(&call.name),
            escape_html(&call.arguments_json())
        );
    }
    if let Some(n) = actions {
        let list = &m.content[m.content.find(ACTION_LIST).unwrap_or(0) + ACTION_LIST.len()..];
        let _ = write!(
            out,
            "<details><summary style=\"color:#777\">{n} available actions</summary><pre style=\"white-space:pre-wrap;margin:0;color:#777\">{}</pre></details>",
            escape_html(list.trim_end())
        );
    }
    out.push_str("</div>");
    out
}

impl Show for Transcript {
    fn mime_bundle(&self) -> Vec<(&'static str, String)> {
        vec![
            ("text/html", self.to_html()),
            ("text/plain", self.to_text()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ToolCall;

    #[test]
    fn folds_the_opening_and_collapses_action_lists() {
        let conversation = Conversation::new(vec![
            Message::user("Instructions"),
            Message::assistant("OK."),
            Message::user("Here is your task. Go. AVAILABLE ACTIONS: look\ninventory\n"),
            Message::assistant("THOUGHT: <b>\nACTION: look"),
            Message::user("You see a cup 1. AVAILABLE ACTIONS: look\ninventory\ngo to desk 1\n"),
            Message::assistant("").with_tool_calls(vec![ToolCall::new(
                "take_action",
                serde_json::json!({"action": "look"}),
            )]),
        ]);
        let t = Transcript::new(&conversation)
            .fold_first(2)
            .with_fact("reward", 1);
        let text = t.to_text();
        assert!(
            text.starts_with(
                "reward: 1\n[2 opening messages folded]\n[user] Here is your task. Go."
            )
        );
        assert!(text.contains("[user] You see a cup 1.\n  (3 available actions)"));
        assert!(text.contains("-> take_action({\"action\":\"look\"})"));
        let html = t.to_html();
        assert!(html.contains("THOUGHT: &lt;b&gt;"));
        assert!(html.contains("<summary style=\"color:#777\">3 available actions</summary>"));
        assert!(html.contains("opening: 2 messages"));
    }

    #[test]
    fn a_long_episode_shows_its_decisive_turns_and_folds_the_rest() {
        let mut messages = vec![Message::system("rules"), Message::user("the task")];
        for i in 0..10 {
            messages.push(Message::assistant(format!("reply {i}")));
            let answer = if i == 6 {
                "Error: no such table".to_string()
            } else {
                format!("answer {i}")
            };
            messages.push(Message::user(answer));
        }
        let conversation = Conversation::new(messages);
        let html = Transcript::new(&conversation).fold_first(1).to_html();
        // Shown: the task, the first reply and its answer, the failing reply and its error, the
        // last reply and its answer; folded: the turns between them.
        for shown in [
            "the task",
            "reply 0",
            "answer 0",
            "reply 6",
            "Error: no such table",
            "reply 9",
            "answer 9",
        ] {
            let at = html
                .find(shown)
                .unwrap_or_else(|| panic!("{shown} missing"));
            let before = &html[..at];
            assert!(
                before.matches("<details").count() == before.matches("</details>").count(),
                "{shown} is folded"
            );
        }
        assert!(html.contains("10 more messages"), "{html}");
        assert!(html.contains("4 more messages"), "{html}");
        // Every message is still there, and all_turns shows them unfolded.
        assert!(html.contains("reply 3") && html.contains("answer 8"));
        let all = Transcript::new(&conversation)
            .fold_first(1)
            .all_turns()
            .to_html();
        assert!(!all.contains("more messages"));
        // A short episode folds nothing.
        let short = Conversation::new(vec![Message::user("task"), Message::assistant("done")]);
        assert!(!Transcript::new(&short).to_html().contains("more messages"));
    }
}
