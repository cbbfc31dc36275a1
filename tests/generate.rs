//! KV-cache generation against plain re-computation, batching, log-probs, stops, and
//! multi-turn rollouts, on the tiny fixture models and the embedded default model.

mod common;

use agentbench_tuning::chat::{Conversation, Message, RenderOptions, Tokenizer};
use agentbench_tuning::env::{Environment, Step};
use agentbench_tuning::generate::{
    EpisodeEnd, FinishReason, GenerateOptions, GenerationSession, RolloutOptions, Sampling,
    generate, rollout,
};
use agentbench_tuning::model::{
    Architecture, Decoder, Mode, ModelConfig, ModelSource, Padding, TokenBatch,
};
use candle_core::{D, DType, Device};

fn tiny(name: &str) -> Decoder {
    let dir = common::fixture("model").join(name);
    Decoder::load(&ModelSource::Dir(dir), &Device::Cpu, DType::F32).unwrap()
}

fn default_model() -> Option<(Decoder, Tokenizer)> {
    common::default_decoder()
}

/// Greedy decoding without a cache: the whole sequence through the model at every step.
fn greedy_without_cache(model: &Decoder, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    for _ in 0..n {
        let batch = TokenBatch::pad(&[seq.clone()], 0, Padding::Right, &Device::Cpu).unwrap();
        let logits = model.forward(&batch, Mode::Eval).unwrap();
        let last = logits.narrow(1, seq.len() - 1, 1).unwrap();
        let id = last.argmax(D::Minus1).unwrap().flatten_all().unwrap();
        seq.push(id.to_vec1::<u32>().unwrap()[0]);
    }
    seq[prompt.len()..].to_vec()
}

/// Stop ids no tiny model emits, so generations run to their length.
fn run_to_length(n: usize) -> GenerateOptions {
    GenerateOptions {
        stop_token_ids: vec![u32::MAX],
        ..GenerateOptions::greedy(n)
    }
}

#[test]
fn cached_greedy_equals_recomputation_on_every_architecture() {
    let Some(path) = common::default_model() else {
        return;
    };
    // Any tokenizer serves here: ids stay below the tiny vocabulary (128).
    let tokenizer = Tokenizer::from_gguf(&path).unwrap();
    for name in ["llama", "qwen2", "qwen3"] {
        let model = tiny(name);
        let prompts = vec![vec![17u32, 5, 99, 3, 64], vec![8u32, 120], vec![40u32; 9]];
        let out = generate(&model, &tokenizer, &prompts, &run_to_length(12)).unwrap();
        for (prompt, g) in prompts.iter().zip(&out) {
            assert_eq!(g.ids, greedy_without_cache(&model, prompt, 12), "{name}");
            assert_eq!(g.finish, FinishReason::Length);
        }
    }
}

#[test]
fn half_precision_models_generate_through_the_cache() {
    // bf16 (sm_80+ GPUs) and f16 (a T4): the cached decoding path has every op in each dtype.
    let Some(path) = common::default_model() else {
        return;
    };
    let tokenizer = Tokenizer::from_gguf(&path).unwrap();
    let dir = common::fixture("model").join("qwen3");
    for dtype in [DType::BF16, DType::F16] {
        let model = Decoder::load(&ModelSource::Dir(dir.clone()), &Device::Cpu, dtype).unwrap();
        let prompts = vec![vec![17u32, 5, 99, 3, 64], vec![8u32, 120]];
        let out = generate(&model, &tokenizer, &prompts, &run_to_length(6)).unwrap();
        for g in &out {
            assert_eq!(
                (g.ids.len(), g.finish),
                (6, FinishReason::Length),
                "{dtype:?}"
            );
        }
    }
}

#[test]
fn a_session_reuses_its_cache_across_calls_and_equals_fresh_generation() {
    let Some(path) = common::default_model() else {
        return;
    };
    let tokenizer = Tokenizer::from_gguf(&path).unwrap();
    let same = |a: &[agentbench_tuning::generate::Generation],
                b: &[agentbench_tuning::generate::Generation],
                what: &str| {
        for (x, y) in a.iter().zip(b) {
            assert_eq!((&x.ids, x.finish), (&y.ids, y.finish), "{what}");
            for (p, q) in x.logprobs.iter().zip(&y.logprobs) {
                assert!((p - q).abs() < 1e-4, "{what}: {p} vs {q}");
            }
        }
        assert_eq!(a.len(), b.len());
    };
    for name in ["llama", "qwen2", "qwen3"] {
        let model = tiny(name);
        let p0 = vec![17u32, 5, 99, 3, 64];
        let p1 = vec![8u32, 120, 7, 7];
        let p2 = vec![40u32; 9];
        // A stop id that ends sequence 1 early while the others run on, so finished sequences
        // must keep their cache while the batch goes on.
        let probe = generate(
            &model,
            &tokenizer,
            std::slice::from_ref(&p1),
            &run_to_length(8),
        );
        let probe = probe.unwrap();
        let options = GenerateOptions {
            stop_token_ids: vec![probe[0].ids[2]],
            ..GenerateOptions::greedy(8)
        };
        let mut session = GenerationSession::new(&model);
        let first = session
            .generate(&tokenizer, &[(0, &p0), (1, &p1), (2, &p2)], &options)
            .unwrap();
        let fresh = generate(
            &model,
            &tokenizer,
            &[p0.clone(), p1.clone(), p2.clone()],
            &options,
        );
        same(&first, &fresh.unwrap(), name);
        assert_eq!(first[1].finish, FinishReason::StopToken);
        let used = session.cached_positions();

        // Turn 2: sequence 0 goes on after its reply, sequence 1 diverges inside its cached
        // prefix, sequence 2 leaves and a new sequence 3 joins.
        let p0b = [&p0[..], &first[0].ids, &[5, 6, 2]].concat();
        let p1b = [&p1[..2], &[9, 9, 9][..]].concat();
        let p3 = vec![1u32, 2, 3];
        let second = session
            .generate(&tokenizer, &[(0, &p0b), (1, &p1b), (3, &p3)], &options)
            .unwrap();
        let fresh = generate(&model, &tokenizer, &[p0b.clone(), p1b, p3], &options).unwrap();
        same(&second, &fresh, name);
        // Only the new tokens were prefilled: the block is far shorter than the prompts.
        assert!(session.cached_positions() - used < p0b.len() + 8, "{name}");

        // Turn 3: the same prompt again (everything cached) still gets its logits.
        let third = session
            .generate(&tokenizer, &[(0, &p0b)], &options)
            .unwrap();
        same(&third, &fresh[..1], name);
    }
}

#[test]
fn generated_logprobs_equal_teacher_forcing() {
    let Some(path) = common::default_model() else {
        return;
    };
    let tokenizer = Tokenizer::from_gguf(&path).unwrap();
    let model = tiny("qwen2");
    let prompt = vec![3u32, 14, 15, 92, 65, 35];
    let options = GenerateOptions {
        sampling: Sampling::with_temperature(1.0),
        seed: 11,
        ..run_to_length(10)
    };
    let g = &generate(&model, &tokenizer, std::slice::from_ref(&prompt), &options).unwrap()[0];
    let full: Vec<u32> = prompt.iter().chain(&g.ids).copied().collect();
    let batch = TokenBatch::pad(&[full], 0, Padding::Right, &Device::Cpu).unwrap();
    let lp = model.token_logprobs(&batch, Mode::Eval).unwrap();
    let lp = lp.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
    for (i, want) in lp[prompt.len() - 1..].iter().enumerate() {
        assert!(
            (g.logprobs[i] - want).abs() < 1e-4,
            "{i}: {} {want}",
            g.logprobs[i]
        );
    }
}

#[test]
fn sampling_is_seeded_per_sequence() {
    let Some(path) = common::default_model() else {
        return;
    };
    let tokenizer = Tokenizer::from_gguf(&path).unwrap();
    let model = tiny("llama");
    let options = GenerateOptions {
        sampling: Sampling {
            top_k: 20,
            top_p: 0.9,
            ..Sampling::with_temperature(1.0)
        },
        seed: 5,
        ..run_to_length(16)
    };
    let prompts = vec![vec![1u32, 2, 3], vec![4u32, 5]];
    let batch = generate(&model, &tokenizer, &prompts, &options).unwrap();
    // Sequence i of a batch uses seed + i.
    let second = GenerateOptions {
        seed: 6,
        ..options.clone()
    };
    let alone = generate(&model, &tokenizer, &prompts[1..], &second).unwrap();
    assert_eq!(batch[1].ids, alone[0].ids);
    let again = generate(&model, &tokenizer, &prompts, &options).unwrap();
    assert_eq!(batch, again);
    let other = GenerateOptions {
        seed: 99,
        ..options
    };
    let other = generate(&model, &tokenizer, &prompts, &other).unwrap();
    assert_ne!(batch[0].ids, other[0].ids);
}

#[test]
fn default_model_answers_and_batches_equal_single_runs() {
    let Some((model, tokenizer)) = default_model() else {
        return;
    };
    let questions = [
        "What is the capital of France?",
        "How many legs does a spider have?",
        "Say hello.",
        "What is 2 + 2?",
        "Name a primary color.",
        "What language is spoken in Spain?",
        "What is the opposite of hot?",
        "Which planet do we live on?",
    ];
    let prompts: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| {
            let conv = Conversation::new(vec![Message::user(*q)]);
            tokenizer
                .encode_prompt(&conv, &RenderOptions::generation())
                .unwrap()
        })
        .collect();
    let options = GenerateOptions::greedy(24);
    let batch = generate(&model, &tokenizer, &prompts, &options).unwrap();
    for (i, prompt) in prompts.iter().enumerate() {
        let single = generate(&model, &tokenizer, std::slice::from_ref(prompt), &options).unwrap();
        assert_eq!(batch[i].ids, single[0].ids, "question {i}");
    }
    assert!(batch[0].text.contains("Paris"), "{:?}", batch[0].text);
    // Stopped by <|im_end|>, which is kept as the last id and left out of the text.
    let im_end = tokenizer.token_id("<|im_end|>").unwrap();
    assert_eq!(batch[0].finish, FinishReason::StopToken);
    assert_eq!(batch[0].ids.last(), Some(&im_end));
    assert!(!batch[0].text.contains("<|im_end|>"));
}

#[test]
fn stop_strings_cut_the_text() {
    let Some((model, tokenizer)) = default_model() else {
        return;
    };
    let conv = Conversation::new(vec![Message::user(
        "Count from 1 to 20, separated by commas.",
    )]);
    let prompt = tokenizer
        .encode_prompt(&conv, &RenderOptions::generation())
        .unwrap();
    let full = &generate(
        &model,
        &tokenizer,
        std::slice::from_ref(&prompt),
        &GenerateOptions::greedy(40),
    )
    .unwrap()[0];
    assert!(full.text.contains('5'), "{:?}", full.text);
    let options = GenerateOptions {
        stop_strings: vec!["5".into()],
        ..GenerateOptions::greedy(40)
    };
    let cut = &generate(&model, &tokenizer, &[prompt], &options).unwrap()[0];
    assert_eq!(cut.finish, FinishReason::StopString);
    assert_eq!(cut.text, full.text[..full.text.find('5').unwrap()]);
    assert!(cut.ids.len() < full.ids.len());
}

/// Answers every reply with an observation; the episode ends after `turns` replies, with
/// reward 1 if any reply mentioned "4".
struct Echo {
    turns: usize,
    seen: usize,
    said_four: bool,
}

impl Environment for Echo {
    fn reset(&mut self) -> agentbench_tuning::Result<Conversation> {
        self.seen = 0;
        Ok(Conversation::new(vec![
            Message::system("You are a helpful assistant."),
            Message::user("What is 2 + 2?"),
        ]))
    }

    fn step(&mut self, reply: &Message) -> agentbench_tuning::Result<Step> {
        self.seen += 1;
        self.said_four |= reply.content.contains('4');
        if self.seen == self.turns {
            return Ok(Step::finish(if self.said_four { 1.0 } else { 0.0 }));
        }
        Ok(Step::observe(format!(
            "Observation {}: noted. Now, what is 3 + {}?",
            self.seen, self.seen
        )))
    }
}

#[test]
fn rollout_keeps_the_exact_token_sequence() {
    let Some((model, tokenizer)) = default_model() else {
        return;
    };
    let mut envs: Vec<Echo> = (0..2)
        .map(|i| Echo {
            turns: 2 + i,
            seen: 0,
            said_four: false,
        })
        .collect();
    let options = RolloutOptions {
        generate: GenerateOptions::greedy(32),
        max_turns: 5,
        ..RolloutOptions::default()
    };
    let episodes = rollout(&model, &tokenizer, &mut envs, &options).unwrap();
    for (i, ep) in episodes.iter().enumerate() {
        assert_eq!(ep.turns(), 2 + i);
        assert_eq!(ep.end, EpisodeEnd::Done);
        assert_eq!(ep.tokens.len(), ep.policy_mask.len());
        assert_eq!(ep.tokens.len(), ep.logprobs.len());
        // The policy's tokens are exactly its replies.
        let replies: Vec<&Message> = ep
            .conversation
            .messages
            .iter()
            .filter(|m| m.role == agentbench_tuning::chat::Role::Assistant)
            .collect();
        let mut spans = Vec::new();
        let mut start = None;
        for (j, &m) in ep.policy_mask.iter().chain(&[0]).enumerate() {
            match (m, start) {
                (1, None) => start = Some(j),
                (0, Some(s)) => {
                    spans.push(tokenizer.decode(&ep.tokens[s..j], false).unwrap());
                    start = None;
                }
                _ => {}
            }
        }
        assert_eq!(spans.len(), replies.len());
        for (span, reply) in spans.iter().zip(&replies) {
            // A reply cut by the length limit has no end-of-turn token.
            assert_eq!(
                span.strip_suffix("<|im_end|>").unwrap_or(span),
                reply.content
            );
        }
        // The whole sequence is the rendered conversation (up to the final reply).
        let text = tokenizer.decode(&ep.tokens, false).unwrap();
        let rendered = tokenizer
            .render(&ep.conversation, &RenderOptions::default())
            .unwrap();
        assert!(rendered.starts_with(&text), "{text:?}\n{rendered:?}");
        assert!(ep.prompt_len > 0 && ep.policy_mask[..ep.prompt_len].iter().all(|&m| m == 0));
    }
}

/// A random Qwen3-shaped model small enough for a test, with Qwen3's 151,936-token vocabulary.
fn tiny_qwen3_full_vocab() -> Decoder {
    let config = ModelConfig {
        architecture: Architecture::Qwen3,
        vocab_size: 151_936,
        hidden_size: 16,
        intermediate_size: 32,
        num_layers: 1,
        num_heads: 2,
        num_kv_heads: 1,
        head_dim: 8,
        rms_norm_eps: 1e-6,
        rope_theta: 1e6,
        rope_scaling: None,
        max_position_embeddings: 4096,
        tie_word_embeddings: true,
        qkv_bias: false,
        qk_norm: true,
        bos_token_id: None,
        eos_token_ids: vec![],
    };
    Decoder::random(config, 3, &Device::Cpu, DType::F32).unwrap()
}

#[test]
fn rollout_continues_when_the_template_rewrites_past_turns() {
    let Some(dir) = common::qwen_tokenizer("qwen3") else {
        return;
    };
    let tokenizer = Tokenizer::from_json_files(
        &dir.join("tokenizer.json"),
        Some(&dir.join("tokenizer_config.json")),
    )
    .unwrap();
    let model = tiny_qwen3_full_vocab();
    let mut envs = vec![Echo {
        turns: 3,
        seen: 0,
        said_four: false,
    }];
    // With thinking off, each prompt ends with an empty think block that the template drops
    // from past turns: the rendered text stops being a prefix after the first reply.
    let options = RolloutOptions {
        generate: GenerateOptions {
            sampling: Sampling::with_temperature(1.0),
            ..GenerateOptions::greedy(6)
        },
        render: RenderOptions::default().with_thinking(false),
        ..RolloutOptions::default()
    };
    let ep = &rollout(&model, &tokenizer, &mut envs, &options).unwrap()[0];
    assert_eq!(ep.turns(), 3);
    let im_end = tokenizer.token_id("<|im_end|>").unwrap();
    // Each run of policy tokens is followed by the end of its turn, the observation and the
    // next header with its empty think block.
    let mut j = 0;
    let mut runs = 0;
    while j < ep.tokens.len() {
        if ep.policy_mask[j] == 1 {
            let start = j;
            while j < ep.tokens.len() && ep.policy_mask[j] == 1 {
                j += 1;
            }
            runs += 1;
            if j == ep.tokens.len() {
                break;
            }
            let rest = tokenizer.decode(&ep.tokens[j..], false).unwrap();
            let closed = ep.tokens[j - 1] == im_end || rest.starts_with("<|im_end|>");
            assert!(closed, "turn at {start} not closed: {rest:?}");
            let next = rest.find("<|im_start|>assistant\n<think>\n\n</think>\n\n");
            assert!(rest.contains("Observation") && next.is_some(), "{rest:?}");
        } else {
            j += 1;
        }
    }
    assert_eq!(runs, 3);
    // The realignment was needed: re-rendering the conversation drops the past think blocks.
    let seq = tokenizer.decode(&ep.tokens, false).unwrap();
    let rendered = tokenizer
        .render(
            &ep.conversation,
            &RenderOptions::default().with_thinking(false),
        )
        .unwrap();
    assert!(!rendered.starts_with(&seq));
    assert_eq!(seq.matches("<think>\n\n</think>").count(), 3);
}
