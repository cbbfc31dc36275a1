//! How the agent talks to the household: AgentBench's ALFWorld reply rules (v0.2 text with
//! `THOUGHT:`/`ACTION:`, and a `take_action` tool), with this project's own wording.

use std::collections::HashMap;

use serde_json::json;

use crate::chat::Tool;

/// The first user message of a text-protocol episode.
pub const INSTRUCTIONS: &str = "You are an agent acting in a household to complete a task. \
At the start you get a description of the room and your goal. In every turn, reply with your \
reasoning and then one action, exactly in this format:\n\
\"THOUGHT: your reasoning about the situation and what to do next.\nACTION: your next action\"\n\
You may also reply with only \"ACTION: your next action\". After each action the household \
tells you what happened and lists the actions you can take. If it answers \"Nothing \
happened\", the action was not possible and you should try something else.\n\
Rules:\n1. Choose the action from the available actions; anything else is not possible.\n\
2. Act directly and keep your thoughts short.\n\n";

/// The agent's acknowledgement that follows [`INSTRUCTIONS`].
pub const ACKNOWLEDGEMENT: &str = "OK. I will reason briefly and give one action per turn.";

/// The system prompt of a function-calling episode.
pub const FC_SYSTEM_PROMPT: &str = "You are an agent acting in a household to complete a task. \
You get a description of the room and your goal. Act by calling the take_action tool with one \
of the available actions, one call per turn; the result tells you what happened and lists the \
actions you can take next. \"Nothing happened\" means the action was not possible. Keep any \
reasoning short.";

/// The function-calling tool: `take_action{action}`.
pub fn fc_tools() -> Vec<Tool> {
    vec![Tool::function(
        "take_action",
        "Take one action in the household. The action must be one of the available actions.",
        json!({
            "type": "object",
            "properties": {
                "action": {
                    "type": "string",
                    "description": "The action, exactly as listed, e.g. \"go to cabinet 1\"."
                }
            },
            "required": ["action"]
        }),
    )]
}

/// `" AVAILABLE ACTIONS: a\nb\n…\n"`, appended to every observation.
pub fn available_actions(commands: &[String]) -> String {
    format!(" AVAILABLE ACTIONS: {}\n", commands.join("\n"))
}

/// Reads a text-protocol reply as AgentBench does: the text after the first `ACTION:` up to
/// the end of its line, trimmed and lower-cased, then [`match_action`]. `None` when there is
/// no `ACTION:` (the episode fails).
pub fn process_action(reply: &str, choices: &[String]) -> Option<String> {
    let start = reply.find("ACTION:")? + "ACTION:".len();
    let rest = &reply[start..];
    // Python's `.` stops at `\n` only.
    let line = rest.split('\n').next().unwrap_or_default();
    Some(match_action(line, choices))
}

/// The admissible command an action text means: itself when it is one, else the choice with
/// the highest sentence BLEU (NLTK's, smoothing method 4; ties go to the first) if that is
/// above 0.01, else the text unchanged (which the household answers with "Nothing
/// happened.").
pub fn match_action(action: &str, choices: &[String]) -> String {
    let action = python_strip(action).to_lowercase();
    let action = action.split('\n').next().unwrap_or_default().to_string();
    if choices.is_empty() || choices.contains(&action) {
        return action;
    }
    if beyond_any_match(&action, choices) {
        return action;
    }
    // The action's n-grams are counted once; each choice then costs its own few words.
    let hypothesis = Hypothesis::new(&action);
    let mut best: Option<(usize, f64)> = None;
    for (i, choice) in choices.iter().enumerate() {
        let score = hypothesis.bleu(choice);
        if best.is_none_or(|(_, b)| score > b) {
            best = Some((i, score));
        }
    }
    match best {
        Some((i, score)) if score > 0.01 => choices[i].clone(),
        _ => action,
    }
}

/// Whether `action` is so much longer than every choice that no choice can score above 0.01,
/// so that its n-grams need not be counted. With c action words (c > 100) and at most m words
/// in a choice, each n-gram precision is at most m / (c − 3) and method 4's smoothed value at
/// most ln(c) / (10 (c − 3)), both below 0.01 once c − 3 > 100 m; the brevity penalty is 1 and
/// the geometric mean is below its largest term.
fn beyond_any_match(action: &str, choices: &[String]) -> bool {
    let words = python_split(action).len();
    let longest = choices
        .iter()
        .map(|c| python_split(c).len())
        .max()
        .unwrap_or(0);
    words > 100 && words - 3 > 100 * longest
}

/// NLTK's (3.10) `sentence_bleu([reference.split()], hypothesis.split())` with uniform 4-gram
/// weights and `SmoothingFunction().method4`. As in NLTK, no unigram match scores 0, and a
/// zero precision that method 4 leaves unsmoothed (one-word hypotheses) is left out of the
/// geometric mean.
pub fn sentence_bleu(reference: &str, hypothesis: &str) -> f64 {
    Hypothesis::new(hypothesis).bleu(reference)
}

/// A hypothesis split into words, with the count of each of its 1- to 4-grams (NLTK's
/// `Counter`s), so that scoring it against a reference takes time in the reference's length.
struct Hypothesis<'a> {
    len: usize,
    grams: [HashMap<Vec<&'a str>, usize>; 4],
}

impl<'a> Hypothesis<'a> {
    fn new(text: &'a str) -> Self {
        let words = python_split(text);
        let mut grams: [HashMap<Vec<&'a str>, usize>; 4] = Default::default();
        for (n, counts) in grams.iter_mut().enumerate() {
            for gram in words.windows(n + 1) {
                *counts.entry(gram.to_vec()).or_default() += 1;
            }
        }
        Self {
            len: words.len(),
            grams,
        }
    }

    /// [`sentence_bleu`] of this hypothesis against `reference`.
    fn bleu(&self, reference: &str) -> f64 {
        let refs: Vec<&str> = python_split(reference);
        let precisions: [(usize, usize); 4] =
            std::array::from_fn(|n| self.modified_precision(&refs, n + 1));
        if precisions[0].0 == 0 {
            return 0.0;
        }
        let hyp_len = self.len;
        let (r, c) = (refs.len() as f64, hyp_len as f64);
        let brevity = if hyp_len > refs.len() {
            1.0
        } else {
            (1.0 - r / c).exp()
        };
        let mut increment = 1i32;
        let mut sum = 0.0;
        for &(num, den) in &precisions {
            let p = if num == 0 && hyp_len > 1 {
                let numerator = 1.0 / (2f64.powi(increment) * 5.0 / c.ln());
                increment += 1;
                numerator / den as f64
            } else {
                num as f64 / den as f64
            };
            if p > 0.0 {
                sum += 0.25 * p.ln();
            }
        }
        brevity * sum.exp()
    }

    /// Clipped n-gram matches (each distinct n-gram counts at most as often as the reference
    /// has it) and the number of hypothesis n-grams (at least 1).
    fn modified_precision(&self, reference: &[&str], n: usize) -> (usize, usize) {
        let mut available: HashMap<&[&str], usize> = HashMap::new();
        for gram in reference.windows(n) {
            *available.entry(gram).or_default() += 1;
        }
        let counts = &self.grams[n - 1];
        let matched = available
            .iter()
            .map(|(gram, &have)| counts.get(*gram).map_or(0, |&c| c.min(have)))
            .sum();
        (matched, (self.len + 1).saturating_sub(n).max(1))
    }
}

/// Python's `str.isspace` for one character: Unicode white space plus the separators
/// U+001C to U+001F.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` (on runs of whitespace).
fn python_split(text: &str) -> Vec<&str> {
    text.split(python_space).filter(|w| !w.is_empty()).collect()
}

/// Python's `str.strip()`.
fn python_strip(text: &str) -> &str {
    text.trim_matches(python_space)
}

/// Removes the action lists from every user message but the last, as AgentBench does after
/// each step to keep the prompt short.
pub fn strip_old_action_lists(messages: &mut [crate::chat::Message]) {
    use crate::chat::Role;
    let last_user = messages.iter().rposition(|m| m.role == Role::User);
    for (i, m) in messages.iter_mut().enumerate() {
        if m.role == Role::User
            && Some(i) != last_user
            && let Some(cut) = m.content.find("AVAILABLE ACTIONS")
        {
            m.content.truncate(cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NLTK's `modified_precision`, as written before the n-gram counts: clipped matches
    /// counted one hypothesis n-gram at a time.
    fn naive_precision(reference: &[&str], hypothesis: &[&str], n: usize) -> (usize, usize) {
        let grams = |words: &[&str]| -> Vec<Vec<String>> {
            words
                .windows(n)
                .map(|w| w.iter().map(|s| s.to_string()).collect())
                .collect()
        };
        let (hyp, available) = (grams(hypothesis), grams(reference));
        let mut matched = 0;
        for (k, g) in hyp.iter().enumerate() {
            let used = hyp[..=k].iter().filter(|h| *h == g).count();
            if available.iter().filter(|a| *a == g).count() >= used {
                matched += 1;
            }
        }
        (matched, hyp.len().max(1))
    }

    #[test]
    fn counted_ngrams_clip_as_the_one_at_a_time_definition() {
        let mut rng = crate::rng::Rng::new(7);
        let vocab = ["go", "to", "cabinet", "1", "2", "the", "open", "put"];
        let words = |rng: &mut crate::rng::Rng, len: usize| -> Vec<&str> {
            (0..len).map(|_| vocab[rng.below(vocab.len())]).collect()
        };
        for _ in 0..500 {
            let (rl, hl) = (rng.below(9), rng.below(12));
            let reference = words(&mut rng, rl);
            let hypothesis = words(&mut rng, hl);
            let text = hypothesis.join(" ");
            let counted = Hypothesis::new(&text);
            for n in 1..=4 {
                assert_eq!(
                    counted.modified_precision(&reference, n),
                    naive_precision(&reference, &hypothesis, n),
                    "{reference:?} / {hypothesis:?}, n = {n}"
                );
            }
        }
    }

    #[test]
    fn an_action_past_the_length_bound_scores_below_the_threshold_with_every_choice() {
        let c = choices(&["go to cabinet 1", "put the mug in drawer 2", "look"]);
        let mut rng = crate::rng::Rng::new(11);
        let vocab: Vec<&str> = c.iter().flat_map(|s| s.split(' ')).collect();
        for _ in 0..50 {
            // Just past the bound (6 words in the longest choice: 604 words), from the
            // choices' own words, so as many n-grams match as can.
            let len = 604 + rng.below(50);
            let action: Vec<&str> = (0..len).map(|_| vocab[rng.below(vocab.len())]).collect();
            let action = action.join(" ");
            assert!(beyond_any_match(&action, &c));
            let hypothesis = Hypothesis::new(&action);
            for choice in &c {
                assert!(hypothesis.bleu(choice) <= 0.01, "{choice}");
            }
        }
        assert!(!beyond_any_match(&"look ".repeat(603), &c));
    }

    #[test]
    fn a_huge_action_is_matched_like_any_other() {
        // 100 KB of words: counted once, then each choice costs its own few words.
        let action = format!("go to {}cabinet 1", "the very long way ".repeat(5_600));
        let c = choices(&["go to cabinet 1", "open drawer 2"]);
        assert!(action.len() > 100_000);
        assert_eq!(match_action(&action, &c), action.to_lowercase());
        assert_eq!(
            process_action(&format!("ACTION: {action}"), &c).as_deref(),
            Some(action.as_str())
        );
    }

    fn choices(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_the_action_line_and_maps_near_misses() {
        let c = choices(&["go to cabinet 1", "go to fridge 1", "open drawer 2", "look"]);
        assert_eq!(
            process_action("THOUGHT: hm.\nACTION: Go to Fridge 1\nmore", &c).as_deref(),
            Some("go to fridge 1")
        );
        assert_eq!(process_action("no action here", &c), None);
        assert_eq!(process_action("Action: look", &c), None);
        assert_eq!(
            process_action("ACTION: go to the fridge 1 please", &c).as_deref(),
            Some("go to fridge 1")
        );
        // One word: only the unigram precision counts, times the brevity penalty, so a
        // three-word choice scores exp(-2) > 0.01.
        assert_eq!(
            process_action("ACTION: open", &c).as_deref(),
            Some("open drawer 2")
        );
        assert_eq!(process_action("ACTION:", &c).as_deref(), Some(""));
    }

    #[test]
    fn bleu_matches_hand_computed_values() {
        // Identical 4-word sentences: every precision is 1.
        assert!((sentence_bleu("a b c d", "a b c d") - 1.0).abs() < 1e-12);
        // "go to fridge" vs "go to fridge 1": p1 = p2 = 1, p3 = 1/1, p4 = 0/1 smoothed to
        // 1 / (2 * 5 / ln 3); brevity exp(1 - 4/3).
        let p4: f64 = 1.0 / (2.0 * 5.0 / 3f64.ln());
        let want = (1.0 - 4.0 / 3.0f64).exp() * (0.25 * p4.ln()).exp();
        assert!((sentence_bleu("go to fridge 1", "go to fridge") - want).abs() < 1e-12);
        assert_eq!(sentence_bleu("go to fridge 1", "xyz abc"), 0.0);
        assert!((sentence_bleu("go to fridge 1", "fridge") - (-3f64).exp()).abs() < 1e-12);
    }
}
