//! Chat templates and tokenisation against transformers' `apply_chat_template` (fixtures made
//! once by `scripts/make_chat_fixtures.py`; see tests/fixtures/chat/README.md), and the
//! assistant-only loss masks.

mod common;

use agentbench_tuning::chat::{
    Conversation, EncodeOptions, Message, RenderOptions, Role, Tokenizer, Tool, Truncation,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    messages: Vec<Message>,
    tools: Option<Vec<Tool>>,
    add_generation_prompt: bool,
    enable_thinking: Option<bool>,
    text: String,
    ids: Vec<u32>,
}

fn cases(name: &str) -> Vec<Case> {
    let path = common::fixture("chat").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str::<Fixture>(&text).unwrap().cases
}

fn qwen(name: &str) -> Option<Tokenizer> {
    let dir = common::qwen_tokenizer(name)?;
    Some(
        Tokenizer::from_json_files(
            &dir.join("tokenizer.json"),
            Some(&dir.join("tokenizer_config.json")),
        )
        .unwrap(),
    )
}

fn smollm2() -> Option<Tokenizer> {
    Some(Tokenizer::from_gguf(&common::default_model()?).unwrap())
}

fn conversation(case: &Case) -> Conversation {
    Conversation::new(case.messages.clone()).with_tools(case.tools.clone().unwrap_or_default())
}

/// Every case renders to transformers' text byte for byte and tokenises to its ids.
fn check_all(tokenizer: &Tokenizer, fixture: &str) {
    let cases = cases(fixture);
    assert!(cases.len() >= 10, "{fixture}: {} cases", cases.len());
    for case in &cases {
        let options = RenderOptions {
            add_generation_prompt: case.add_generation_prompt,
            enable_thinking: case.enable_thinking,
            ..RenderOptions::default()
        };
        let text = tokenizer
            .render(&conversation(case), &options)
            .unwrap_or_else(|e| panic!("{fixture}/{}: {e}", case.name));
        assert_eq!(
            text, case.text,
            "{fixture}/{}: rendering differs",
            case.name
        );
        let ids = tokenizer.encode(&text).unwrap();
        assert_eq!(ids, case.ids, "{fixture}/{}: token ids differ", case.name);
    }
}

#[test]
fn qwen3_template_matches_transformers() {
    if let Some(t) = qwen("qwen3") {
        check_all(&t, "qwen3");
    }
}

#[test]
fn qwen2_5_template_matches_transformers() {
    if let Some(t) = qwen("qwen2.5") {
        check_all(&t, "qwen2.5");
    }
}

#[test]
fn smollm2_gguf_template_and_tokenizer_match_transformers() {
    if let Some(t) = smollm2() {
        check_all(&t, "smollm2");
    }
}

/// The masked tokens of each trained turn decode to exactly what the assistant wrote after
/// the assistant header, through the end-of-turn token; nothing else is masked.
fn check_masks(tokenizer: &Tokenizer, fixture: &str, options: &EncodeOptions) {
    let mut checked = 0;
    for case in cases(fixture) {
        let conv = conversation(&case);
        if conv.messages.iter().all(|m| m.role != Role::Assistant) {
            continue;
        }
        let enc = tokenizer.encode_conversation(&conv, options).unwrap();
        assert_eq!(enc.ids.len(), enc.mask.len());
        let mut masked = 0;
        let assistants = conv
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count();
        assert_eq!(enc.turns.len(), assistants, "{}", case.name);
        for turn in &enc.turns {
            let (s, e) = turn.tokens;
            let decoded = tokenizer.decode(&enc.ids[s..e], false).unwrap();
            // A token may straddle the header and the reply ("\n" + "\n"): then it is masked.
            let span = &enc.text[turn.bytes.0..turn.bytes.1];
            assert!(
                decoded.ends_with(span),
                "{}: {decoded:?} vs {span:?}",
                case.name
            );
            assert!(
                decoded.len() - span.len() <= 1,
                "{}: {decoded:?}",
                case.name
            );
            assert!(
                enc.text[..turn.bytes.0].ends_with("<|im_start|>assistant\n"),
                "{}: turn starts after {:?}",
                case.name,
                &enc.text[..turn.bytes.0]
            );
            assert!(
                decoded.ends_with("<|im_end|>"),
                "{}: {decoded:?}",
                case.name
            );
            let content = conv.messages[turn.message].content.trim();
            let shown = content.rsplit("</think>").next().unwrap_or("").trim();
            assert!(decoded.contains(shown), "{}: {decoded:?}", case.name);
            assert!(enc.mask[s..e].iter().all(|&m| m == 1));
            masked += e - s;
        }
        assert_eq!(
            enc.num_trained(),
            masked,
            "{}: stray masked tokens",
            case.name
        );
        checked += 1;
    }
    assert!(
        checked >= 5,
        "{fixture}: only {checked} conversations with assistant turns"
    );
}

#[test]
fn masks_cover_exactly_the_assistant_turns() {
    let plain = EncodeOptions::default();
    if let Some(t) = qwen("qwen2.5") {
        check_masks(&t, "qwen2.5", &plain);
    }
    if let Some(t) = qwen("qwen3") {
        check_masks(&t, "qwen3", &plain);
    }
    if let Some(t) = smollm2() {
        check_masks(&t, "smollm2", &plain);
    }
}

fn db_conversation() -> Conversation {
    Conversation::new(vec![
        Message::system("You are a SQL agent."),
        Message::user("How many rows are in table t?"),
        Message::assistant("Action: Operation\n```sql\nSELECT COUNT(*) FROM t;\n```")
            .not_for_training(),
        Message::user("[(3,)]"),
        Message::assistant("Action: Answer\nFinal Answer: [\"3\"]"),
    ])
}

#[test]
fn opted_out_turns_and_truncation() {
    let Some(t) = qwen("qwen2.5") else {
        return;
    };
    let conv = db_conversation();
    let enc = t
        .encode_conversation(&conv, &EncodeOptions::default())
        .unwrap();
    assert_eq!(enc.turns.len(), 2);
    assert!(!enc.turns[0].trained && enc.turns[1].trained);
    let (s, e) = enc.turns[1].tokens;
    assert_eq!(enc.num_trained(), e - s);
    assert_eq!(
        t.decode(&enc.ids[s..e], false).unwrap(),
        "Action: Answer\nFinal Answer: [\"3\"]<|im_end|>"
    );

    // Over the limit: an error by default, else cut at the end of the last turn that fits.
    let limit = enc.turns[1].tokens.1 - 1;
    let short = EncodeOptions {
        max_len: Some(limit),
        ..EncodeOptions::default()
    };
    let err = t
        .encode_conversation(&conv, &short)
        .unwrap_err()
        .to_string();
    assert!(err.contains("over the limit"), "{err}");
    let drop = EncodeOptions {
        truncation: Truncation::DropTurns,
        ..short.clone()
    };
    let cut = t.encode_conversation(&conv, &drop).unwrap();
    assert_eq!(cut.dropped_turns, 1);
    assert_eq!(cut.ids.len(), enc.turns[0].tokens.1);
    assert_eq!(cut.ids[..], enc.ids[..cut.ids.len()]);
    assert!(cut.text.ends_with("<|im_end|>"));
    let tiny = EncodeOptions {
        max_len: Some(5),
        ..drop
    };
    let err = t.encode_conversation(&conv, &tiny).unwrap_err().to_string();
    assert!(err.contains("cannot be truncated"), "{err}");
}

#[test]
fn a_model_without_template_is_a_clear_error() {
    let Some(dir) = common::qwen_tokenizer("qwen2.5") else {
        return;
    };
    let t = Tokenizer::from_json_files(&dir.join("tokenizer.json"), None).unwrap();
    let err = t
        .render(&db_conversation(), &RenderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no chat template"), "{err}");
}

#[test]
fn prompts_end_with_the_generation_header() {
    let Some(t) = qwen("qwen3") else {
        return;
    };
    let conv = Conversation::new(vec![Message::user("hi")]);
    let off = RenderOptions::generation().with_thinking(false);
    let ids = t.encode_prompt(&conv, &off).unwrap();
    let text = t.decode(&ids, false).unwrap();
    assert!(
        text.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"),
        "{text:?}"
    );
}
