//! Rewards (method.md, 04): what a played task is worth.
//!
//! - [`grade`]: the one grading scale ([`TaskScore`]) the environments return, best-of-N ranks
//!   samples by, GRPO rewards and the evaluation reports. A DB task's SQL is executed and its
//!   answer or table compared with the gold inside [`crate::env::db::DbEnv`].
//! - [`outcome_reward`]: a household episode's step reward, with optional shaping and penalties.
//!
//! Every task type has an environment, so method.md's ReAct-format heuristic (for tasks without
//! one) has no place here: a broken reply is graded by the environment that parses it.

pub mod grade;

use serde::{Deserialize, Serialize};

pub use grade::{DbVerdict, TaskScore, grade_db, grade_household};

/// Shaping of the environment outcome reward; the default is the plain outcome.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OutcomeShaping {
    /// Weight of the fraction of sub-goals reached (0 = off; 0.2 is a mild choice that keeps
    /// any success above any failure).
    pub progress_weight: f64,
    /// Subtracted per invalid action.
    pub invalid_penalty: f64,
    /// Subtracted per repeated action.
    pub repeat_penalty: f64,
}

impl Default for OutcomeShaping {
    fn default() -> Self {
        Self {
            progress_weight: 0.0,
            invalid_penalty: 0.0,
            repeat_penalty: 0.0,
        }
    }
}

/// What an episode achieved, for [`outcome_reward`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpisodeStats {
    /// Whether the task was solved.
    pub success: bool,
    /// Fraction of sub-goals reached, in [0, 1].
    pub progress: f64,
    /// Invalid actions taken.
    pub invalid_actions: usize,
    /// Actions that repeated the one before.
    pub repeated_actions: usize,
}

/// Success 1.0 (else 0), plus `progress_weight × progress`, minus the penalties.
pub fn outcome_reward(stats: &EpisodeStats, shaping: &OutcomeShaping) -> f64 {
    f64::from(u8::from(stats.success)) + shaping.progress_weight * stats.progress.clamp(0.0, 1.0)
        - shaping.invalid_penalty * stats.invalid_actions as f64
        - shaping.repeat_penalty * stats.repeated_actions as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_is_success_unless_shaped() {
        let stats = EpisodeStats {
            success: false,
            progress: 0.5,
            invalid_actions: 2,
            repeated_actions: 1,
        };
        assert_eq!(outcome_reward(&stats, &OutcomeShaping::default()), 0.0);
        let shaped = OutcomeShaping {
            progress_weight: 0.2,
            invalid_penalty: 0.05,
            repeat_penalty: 0.1,
        };
        assert!((outcome_reward(&stats, &shaped) - (0.1 - 0.1 - 0.1)).abs() < 1e-12);
        let won = EpisodeStats {
            success: true,
            ..stats
        };
        assert!(outcome_reward(&won, &shaped) > 0.8);
    }
}
