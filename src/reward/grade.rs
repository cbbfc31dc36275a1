//! The grading scale every reward in the project shares (method.md, 04): what an environment
//! returns for a played task ([`crate::env::TaskEnv::score`]), what best-of-N ranks samples by,
//! what GRPO rewards and what the evaluation reports.
//!
//! | outcome | score |
//! |---|---|
//! | solved | 1 |
//! | a DB answer that differs from the gold | 0.5 × its Jaccard overlap with it |
//! | a lost household game | 0.5 × the share of sub-goals reached |
//! | a DB episode out of rounds | −0.25 |
//! | a DB reply that broke the protocol | −0.5 |
//! | a household game ended by an invalid reply or a loop | 0.5 × progress − 0.5 |

use serde::{Deserialize, Serialize};

/// Score of a solved task.
pub const SOLVED: f64 = 1.0;
/// Weight of the partial credit (answer overlap, household progress) of an unsolved task.
pub const PARTIAL_WEIGHT: f64 = 0.5;
/// Score of a DB episode that ran out of rounds.
pub const FAILED: f64 = -0.25;
/// Score of a DB reply that broke the protocol; also what a household game ended by an invalid
/// reply loses.
pub const INVALID: f64 = -0.5;

/// The graded score of a played task, in [−0.5, 1] (see the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TaskScore {
    /// Whether the task was solved.
    pub success: bool,
    /// The graded score.
    pub score: f64,
    /// Whether every reply kept to the protocol (no validation failure).
    pub valid: bool,
}

/// How a DB episode ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DbVerdict {
    /// The right answer (or result).
    Solved,
    /// A wrong answer whose rows overlap the gold by this Jaccard share (0 for a wrong
    /// modification or an answer that shares nothing).
    Answered {
        /// Jaccard overlap with the gold, in [0, 1].
        overlap: f64,
    },
    /// Out of rounds.
    Failed,
    /// A reply that broke the protocol.
    Invalid,
}

/// The graded score of a DB task.
pub fn grade_db(verdict: DbVerdict) -> TaskScore {
    let (success, score, valid) = match verdict {
        DbVerdict::Solved => (true, SOLVED, true),
        DbVerdict::Answered { overlap } => (false, PARTIAL_WEIGHT * overlap, true),
        DbVerdict::Failed => (false, FAILED, true),
        DbVerdict::Invalid => (false, INVALID, false),
    };
    TaskScore {
        success,
        score,
        valid,
    }
}

/// The graded score of a household game: solved, or `progress` (the share of sub-goals
/// reached) for partial credit, less the penalty when it ended on an `invalid` reply or a loop.
pub fn grade_household(success: bool, progress: f64, invalid: bool) -> TaskScore {
    let score = if success {
        SOLVED
    } else {
        PARTIAL_WEIGHT * progress + if invalid { INVALID } else { 0.0 }
    };
    TaskScore {
        success,
        score,
        valid: !invalid,
    }
}

/// What a graded score says happened, in words: `solved`, `a wrong answer sharing 40% of the
/// gold rows`, `out of rounds`, … (`household` for a household game, else a DB task).
pub fn describe(score: f64, household: bool) -> String {
    let percent = |share: f64| format!("{:.0}%", 100.0 * share);
    if score >= SOLVED {
        return "solved".into();
    }
    if household {
        return if score >= 0.0 {
            format!(
                "lost with {} of the sub-goals reached",
                percent(score / PARTIAL_WEIGHT)
            )
        } else {
            let progress = (score - INVALID) / PARTIAL_WEIGHT;
            format!(
                "ended by an invalid reply or a loop, {} of the sub-goals reached",
                percent(progress)
            )
        };
    }
    if score > 0.0 {
        format!(
            "a wrong answer sharing {} of the gold rows",
            percent(score / PARTIAL_WEIGHT)
        )
    } else if score == 0.0 {
        "a wrong answer sharing nothing with the gold".into()
    } else if score > INVALID {
        "out of rounds".into()
    } else {
        "a reply that broke the protocol".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_score_is_described_as_what_happened() {
        let db = |v| describe(grade_db(v).score, false);
        assert_eq!(db(DbVerdict::Solved), "solved");
        assert_eq!(
            db(DbVerdict::Answered { overlap: 0.4 }),
            "a wrong answer sharing 40% of the gold rows"
        );
        assert_eq!(
            db(DbVerdict::Answered { overlap: 0.0 }),
            "a wrong answer sharing nothing with the gold"
        );
        assert_eq!(db(DbVerdict::Failed), "out of rounds");
        assert_eq!(db(DbVerdict::Invalid), "a reply that broke the protocol");
        let house = |success, progress, invalid| {
            describe(grade_household(success, progress, invalid).score, true)
        };
        assert_eq!(house(true, 1.0, false), "solved");
        assert_eq!(
            house(false, 0.5, false),
            "lost with 50% of the sub-goals reached"
        );
        assert_eq!(
            house(false, 0.5, true),
            "ended by an invalid reply or a loop, 50% of the sub-goals reached"
        );
    }

    #[test]
    fn the_scale_is_the_documented_one() {
        let score = |v| grade_db(v).score;
        assert_eq!(score(DbVerdict::Solved), 1.0);
        assert_eq!(score(DbVerdict::Answered { overlap: 0.5 }), 0.25);
        assert_eq!(score(DbVerdict::Failed), -0.25);
        assert_eq!(score(DbVerdict::Invalid), -0.5);
        assert!(!grade_db(DbVerdict::Invalid).valid && grade_db(DbVerdict::Failed).valid);
        assert_eq!(grade_household(true, 0.2, false).score, 1.0);
        assert_eq!(grade_household(false, 0.5, false).score, 0.25);
        assert_eq!(grade_household(false, 0.5, true).score, -0.25);
        assert!(!grade_household(false, 0.0, true).valid);
    }
}
