//! Multi-turn rollouts: a model plays episodes of an [`Environment`], turn by turn, batched
//! across environments.
//!
//! Each episode is kept as the exact token sequence the model saw and wrote: the rendered
//! prompt, then per turn the generated ids (policy tokens, with their log-probs) and the
//! tokens of what the template adds after them (end of turn, the observation, the next
//! assistant header). The next turn is generated from that sequence, not from a re-tokenised
//! text, so the log-probs are exactly those of the sequence a trainer will score. Where a
//! template rewrites earlier turns once a reply follows (Qwen3 drops past thinking), the
//! sequence keeps what the model really saw and continues after the reply's end of turn.

use serde::{Deserialize, Serialize};

use super::generator::{FinishReason, GenerateOptions, Generation, GenerationSession};
use crate::chat::{Conversation, Message, RenderOptions, Tokenizer};
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::model::Decoder;

/// How episodes are played.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutOptions {
    /// Generation of each reply (sampling, length, stops, seed).
    pub generate: GenerateOptions,
    /// Template options (e.g. Qwen3's thinking switch).
    pub render: RenderOptions,
    /// Most assistant turns per episode.
    pub max_turns: usize,
    /// Most tokens per episode, prompt included; an episode whose next turn would not fit ends.
    pub max_context: usize,
}

impl Default for RolloutOptions {
    fn default() -> Self {
        Self {
            generate: GenerateOptions::default(),
            render: RenderOptions::default(),
            max_turns: 15,
            max_context: 4096,
        }
    }
}

/// Why an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeEnd {
    /// The environment said it is over.
    Done,
    /// `max_turns` replies were given.
    MaxTurns,
    /// The next reply would not fit in `max_context` tokens.
    ContextFull,
}

/// One played episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// The conversation, with the model's replies and the observations.
    pub conversation: Conversation,
    /// Every token of the episode, as the model saw it.
    pub tokens: Vec<u32>,
    /// 1 on tokens the model generated, 0 on prompt, template and observation tokens.
    pub policy_mask: Vec<u8>,
    /// The log-prob of each generated token when it was sampled, at the sampling temperature
    /// (0 elsewhere).
    pub logprobs: Vec<f32>,
    /// Tokens of the first prompt.
    pub prompt_len: usize,
    /// Messages of the opening conversation (the environment's `reset`).
    pub prompt_messages: usize,
    /// Reward of each step.
    pub rewards: Vec<f64>,
    /// Why it ended.
    pub end: EpisodeEnd,
}

impl Episode {
    /// Total reward.
    pub fn reward(&self) -> f64 {
        self.rewards.iter().sum()
    }

    /// Number of replies the model gave.
    pub fn turns(&self) -> usize {
        self.rewards.len()
    }

    fn append(&mut self, ids: &[u32], logprobs: Option<&[f32]>) {
        self.tokens.extend_from_slice(ids);
        match logprobs {
            Some(lp) => {
                self.policy_mask.extend(std::iter::repeat_n(1, ids.len()));
                self.logprobs.extend_from_slice(lp);
            }
            None => {
                self.policy_mask.extend(std::iter::repeat_n(0, ids.len()));
                self.logprobs.extend(std::iter::repeat_n(0.0, ids.len()));
            }
        }
    }

    fn truncate(&mut self, len: usize) {
        self.tokens.truncate(len);
        self.policy_mask.truncate(len);
        self.logprobs.truncate(len);
    }
}

/// Plays one episode in each environment, generating the replies of all unfinished episodes
/// of a turn as one batch. Turn `t` samples with seed `options.generate.seed + t·1_000_003`.
pub fn rollout<E: Environment>(
    decoder: &Decoder,
    tokenizer: &Tokenizer,
    envs: &mut [E],
    options: &RolloutOptions,
) -> Result<Vec<Episode>> {
    let generation = RenderOptions {
        add_generation_prompt: true,
        ..options.render.clone()
    };
    let mut episodes = Vec::with_capacity(envs.len());
    for env in envs.iter_mut() {
        let conversation = env.reset()?;
        let prompt_messages = conversation.messages.len();
        let tokens = tokenizer.encode(&tokenizer.render(&conversation, &generation)?)?;
        let mut episode = Episode {
            conversation,
            tokens: Vec::new(),
            policy_mask: Vec::new(),
            logprobs: Vec::new(),
            prompt_len: tokens.len(),
            prompt_messages,
            rewards: Vec::new(),
            end: EpisodeEnd::MaxTurns,
        };
        episode.append(&tokens, None);
        episodes.push(episode);
    }
    // Each turn prefills only what the episode gained since its last reply.
    let mut session = GenerationSession::new(decoder);
    let mut open: Vec<usize> = (0..envs.len()).collect();
    for turn in 0..options.max_turns {
        let budget = options.generate.max_new_tokens;
        open.retain(|&i| {
            let fits = episodes[i].tokens.len() + budget <= options.max_context;
            if !fits {
                episodes[i].end = EpisodeEnd::ContextFull;
            }
            fits
        });
        if open.is_empty() {
            break;
        }
        let requests: Vec<(usize, &[u32])> = open
            .iter()
            .map(|&i| (i, episodes[i].tokens.as_slice()))
            .collect();
        let gen_options = GenerateOptions {
            seed: options.generate.seed.wrapping_add(turn as u64 * 1_000_003),
            ..options.generate.clone()
        };
        let replies = session.generate(tokenizer, &requests, &gen_options)?;
        let mut still_open = Vec::with_capacity(open.len());
        for (&i, reply) in open.iter().zip(replies) {
            let episode = &mut episodes[i];
            let step = take_turn(episode, &mut envs[i], tokenizer, &generation, reply)?;
            if step {
                still_open.push(i);
            } else {
                episode.end = EpisodeEnd::Done;
            }
        }
        open = still_open;
    }
    for &i in &open {
        episodes[i].end = EpisodeEnd::MaxTurns;
    }
    Ok(episodes)
}

/// Records one reply, steps the environment and appends the tokens leading to the next
/// reply; returns whether the episode goes on.
fn take_turn<E: Environment>(
    episode: &mut Episode,
    env: &mut E,
    tokenizer: &Tokenizer,
    generation: &RenderOptions,
    reply: Generation,
) -> Result<bool> {
    let base = episode.tokens.len();
    episode.append(&reply.ids, Some(&reply.logprobs));
    let finish = reply.finish;
    let message = Message::assistant(reply.text);
    let step = env.step(&message)?;
    episode.conversation.push(message);
    episode.rewards.push(step.reward);
    if step.done {
        return Ok(false);
    }
    episode.conversation.messages.extend(step.observation);
    let next = tokenizer.render(&episode.conversation, generation)?;
    // Usually the next prompt starts with the sequence so far. A reply cut at a stop string
    // or by the length limit may carry tokens past what the conversation keeps: then the
    // longest part of it that the next prompt starts with is kept.
    let keeps = match finish {
        FinishReason::StopToken => base + reply.ids.len()..=base + reply.ids.len(),
        _ => base..=base + reply.ids.len(),
    };
    for keep in keeps.rev() {
        let so_far = tokenizer.decode(&episode.tokens[..keep], false)?;
        if let Some(rest) = next.strip_prefix(so_far.as_str()) {
            episode.truncate(keep);
            let tail = tokenizer.encode(rest)?;
            episode.append(&tail, None);
            return Ok(true);
        }
    }
    // The template renders earlier turns differently once a reply follows (Qwen3 drops past
    // thinking). The sequence keeps what the model really saw and wrote, closed with the
    // end-of-turn token if the reply lacked it, and continues with what the template puts
    // after the reply's turn: the text after as many end-of-turn tokens as the sequence holds.
    let eos = tokenizer.template()?.eos_token().map(String::from);
    let eos_id = eos.as_deref().and_then(|e| tokenizer.token_id(e));
    let (Some(eos), Some(eos_id)) = (eos, eos_id) else {
        return Err(Error::Chat(
            "the chat template renders earlier turns differently once a reply follows, and \
             has no end-of-turn token to realign on"
                .into(),
        ));
    };
    if episode.tokens.last() != Some(&eos_id) {
        episode.append(&[eos_id], None);
    }
    let turns = episode.tokens.iter().filter(|&&t| t == eos_id).count();
    let after = next
        .match_indices(eos.as_str())
        .nth(turns - 1)
        .map(|(at, e)| at + e.len())
        .ok_or_else(|| {
            Error::Chat(format!(
                "the next prompt has fewer than {turns} end-of-turn tokens; the episode \
                 cannot continue as one token sequence"
            ))
        })?;
    let tail = tokenizer.encode(&next[after..])?;
    episode.append(&tail, None);
    Ok(true)
}
