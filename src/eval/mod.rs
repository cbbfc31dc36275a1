//! Evaluation: models playing held-out tasks in the toolkit's environments.
//!
//! - [`quick`]: the quick held-out score of a phase (base vs adapter on synthetic SQL tasks and
//!   household games), with a paired significance test.

pub mod quick;

pub use quick::{
    PairedComparison, QuickConfig, QuickScore, TaskResult, compare, kind_chart, quick_score,
};
