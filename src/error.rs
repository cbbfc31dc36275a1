//! The crate's error type: every variant names what it was working on.

use std::path::PathBuf;

/// Errors raised by agentbench-tuning, each carrying the context a user needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read, written or created.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", "creating directory", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An environment variable holds a value that cannot be used.
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    InvalidEnv {
        /// The variable's name.
        name: &'static str,
        /// The value found.
        value: String,
        /// Why it was rejected and what is accepted.
        reason: String,
    },
    /// A run profile name that is not one of the known profiles.
    #[error("unknown run profile {name:?}; known profiles: {known}")]
    UnknownProfile {
        /// The name given.
        name: String,
        /// The accepted names, comma-separated.
        known: String,
    },
    /// A chart could not be built or rendered.
    #[error("chart {title:?}: {reason}")]
    Plot {
        /// The chart's title.
        title: String,
        /// What went wrong.
        reason: String,
    },
    /// A table was built with rows that do not match its header.
    #[error("table row {row} has {found} cells, the header has {expected}")]
    TableShape {
        /// Zero-based index of the offending row.
        row: usize,
        /// Number of header columns.
        expected: usize,
        /// Number of cells in the row.
        found: usize,
    },
    /// An error from candle (tensor operations, devices).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// Wraps an I/O error with the action and path it happened on.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
