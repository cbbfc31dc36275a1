//! Task prompts (DB items and household games) played in batches, each episode with its graded
//! score: what the quick score, best-of-N sampling and GRPO rollouts all do.

use crate::chat::Tokenizer;
use crate::env::{TaskEnv, TaskScore};
use crate::error::{Error, Result};
use crate::model::{Decoder, Mode};
use crate::progress::Progress;
use crate::prompts::Prompt;

use super::generator::GenerateOptions;
use super::rollout::{Episode, RolloutOptions, rollout};
use super::sampling::Sampling;

/// How tasks are played.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayOptions {
    /// Episodes played together (one generation batch); DB and household tasks are batched
    /// apart, since their lengths and turn limits differ.
    pub batch: usize,
    /// Most new tokens per reply.
    pub max_new_tokens: usize,
    /// Most replies per DB episode.
    pub db_turns: usize,
    /// Most replies per household episode.
    pub household_turns: usize,
    /// Most tokens per episode, prompt included.
    pub max_context: usize,
    /// How tokens are picked (greedy for evaluation, temperature for sampling).
    pub sampling: Sampling,
    /// Seed of the first batch; batch `b` uses `seed + b·7919` ([`BATCH_SEED_STEP`]; row `i`
    /// adds `i`).
    pub seed: u64,
    /// Adapters on ([`Mode::Eval`]) or off ([`Mode::Reference`]).
    pub mode: Mode,
}

/// One task's episode and its graded score.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayedTask {
    /// The episode, tokens and all.
    pub episode: Episode,
    /// What the environment made of it.
    pub score: TaskScore,
}

/// How far apart the seeds of consecutive batches are.
pub const BATCH_SEED_STEP: u64 = 7919;

/// Batches per part of a long play ([`task_parts`]): each part can be saved as it finishes.
pub const PART_BATCHES: usize = 4;

/// A part of the tasks: whole consecutive batches of one environment, as [`play_tasks`] forms
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPart {
    /// Index of its first batch among all the batches of the tasks (its seeds follow from it).
    pub first_batch: usize,
    /// Its tasks, as indices in task order.
    pub tasks: Vec<usize>,
}

/// The tasks in parts of [`PART_BATCHES`] batches of `batch` tasks of one environment each,
/// so that playing the parts in turn ([`play_part`]) equals playing the tasks whole.
pub fn task_parts(tasks: &[Prompt], batch: usize) -> Vec<TaskPart> {
    let batch = batch.max(1);
    let mut first_batch = 0;
    env_batches(tasks, PART_BATCHES * batch)
        .into_iter()
        .map(|tasks| {
            let part = TaskPart { first_batch, tasks };
            first_batch += part.tasks.len().div_ceil(batch);
            part
        })
        .collect()
}

/// Plays one part of `tasks` ([`task_parts`] with `options.batch`) as [`play_tasks`] plays it
/// among all of them: the same batches with the same seeds. Results in the part's order.
pub fn play_part(
    decoder: &Decoder,
    tokenizer: &Tokenizer,
    tasks: &[Prompt],
    part: &TaskPart,
    options: &PlayOptions,
    label: &str,
) -> Result<Vec<PlayedTask>> {
    let part_tasks =
        part.tasks
            .iter()
            .map(|&i| {
                tasks.get(i).cloned().ok_or_else(|| {
                    Error::Batch(format!("a part names task {i} of {}", tasks.len()))
                })
            })
            .collect::<Result<Vec<Prompt>>>()?;
    let options = PlayOptions {
        seed: options
            .seed
            .wrapping_add(part.first_batch as u64 * BATCH_SEED_STEP),
        ..options.clone()
    };
    play_tasks(decoder, tokenizer, &part_tasks, &options, label)
}

/// The tasks in batches of at most `size` of one environment each, as indices in task order:
/// the DB tasks' batches, then the household games' (their lengths and turn limits differ).
pub fn env_batches(tasks: &[Prompt], size: usize) -> Vec<Vec<usize>> {
    let (household, db): (Vec<usize>, Vec<usize>) =
        (0..tasks.len()).partition(|&i| matches!(tasks[i], Prompt::Household(_)));
    let size = size.max(1);
    db.chunks(size)
        .chain(household.chunks(size))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Plays every task once, `options.batch` episodes at a time, reporting progress under
/// `label`; results come back in task order.
pub fn play_tasks(
    decoder: &Decoder,
    tokenizer: &Tokenizer,
    tasks: &[Prompt],
    options: &PlayOptions,
    label: &str,
) -> Result<Vec<PlayedTask>> {
    if options.batch == 0 {
        return Err(Error::InvalidConfig {
            source_name: "PlayOptions".into(),
            reason: "batch must be at least 1".into(),
        });
    }
    options.sampling.validate()?;
    let mut progress = Progress::new(label, Some(tasks.len() as u64)).with_unit("tasks");
    let mut slots: Vec<Option<PlayedTask>> = vec![None; tasks.len()];
    let mut solved = 0;
    for (b, chunk) in env_batches(tasks, options.batch).iter().enumerate() {
        let household = matches!(tasks[chunk[0]], Prompt::Household(_));
        let mut envs: Vec<TaskEnv> = chunk.iter().map(|&i| tasks[i].env()).collect();
        let rollout_options = RolloutOptions {
            generate: GenerateOptions {
                max_new_tokens: options.max_new_tokens,
                sampling: options.sampling,
                seed: options.seed.wrapping_add(b as u64 * BATCH_SEED_STEP),
                mode: options.mode,
                progress: false,
                ..GenerateOptions::default()
            },
            max_turns: if household {
                options.household_turns
            } else {
                options.db_turns
            },
            max_context: options.max_context,
            ..RolloutOptions::default()
        };
        let episodes = rollout(decoder, tokenizer, &mut envs, &rollout_options)?;
        for ((&i, episode), env) in chunk.iter().zip(episodes).zip(&envs) {
            let score = env.score();
            solved += usize::from(score.success);
            slots[i] = Some(PlayedTask { episode, score });
        }
        progress.inc(chunk.len() as u64);
        progress.set_message(format!("{solved} solved"));
    }
    progress.finish();
    Ok(slots.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Protocol;
    use crate::prompts::Split;

    #[test]
    fn parts_are_whole_batches_of_one_environment_and_know_where_they_start() {
        // Five DB tasks, then three household games.
        let tasks = Split::Dev.prompts(5, 3, Protocol::Text, false).unwrap();
        let of = |batch| -> Vec<(usize, Vec<usize>)> {
            task_parts(&tasks, batch)
                .into_iter()
                .map(|p| (p.first_batch, p.tasks))
                .collect()
        };
        assert_eq!(
            of(1),
            [(0, vec![0, 1, 2, 3]), (4, vec![4]), (5, vec![5, 6, 7])]
        );
        // Batches of two: the DB tasks make three ([0, 1], [2, 3], [4]), so the games' first
        // batch is the fourth.
        assert_eq!(of(2), [(0, vec![0, 1, 2, 3, 4]), (3, vec![5, 6, 7])]);
        let whole = env_batches(&tasks, 2);
        assert_eq!(whole[3], [5, 6]);
    }
}
