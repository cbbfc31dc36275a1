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
    /// A compute dtype the device has no kernels for.
    #[error("{device} cannot compute in {dtype}: {reason}")]
    UnsupportedDtype {
        /// The GPU, with its compute capability.
        device: String,
        /// The dtype asked for.
        dtype: &'static str,
        /// What it needs, and the fix.
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
    /// A file the user pointed at (or a default) does not exist.
    #[error("{path} does not exist: {hint}")]
    MissingFile {
        /// The path looked for.
        path: PathBuf,
        /// How to get the file.
        hint: String,
    },
    /// A JSON file could not be parsed.
    #[error("parsing {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A line of a JSONL file is not the record it should be.
    #[error("{path}:{line}: {source}")]
    JsonLine {
        /// The file.
        path: PathBuf,
        /// One-based line number.
        line: usize,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A SQL statement failed or a database could not be set up.
    #[error("sqlite: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A configuration (a model's config.json or GGUF metadata, a preset file, a phase's
    /// settings) is missing a field or holds a bad value.
    #[error("invalid configuration {source_name}: {reason}")]
    InvalidConfig {
        /// Where the config came from (a path, a repo id, a settings type).
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// A model architecture this crate does not implement.
    #[error(
        "unsupported model architecture {found:?} in {source_name}; supported: llama, qwen2, qwen3"
    )]
    UnsupportedArchitecture {
        /// The architecture named by the config.
        found: String,
        /// Where the config came from.
        source_name: String,
    },
    /// A weight the model needs is not in its checkpoint.
    #[error("tensor {name:?} not found in {source_name}")]
    MissingTensor {
        /// The tensor's name (Hugging Face naming).
        name: String,
        /// The checkpoint looked in.
        source_name: String,
    },
    /// A weight has a different shape from the one the config implies.
    #[error("tensor {tensor:?} has shape {found:?}, the config implies {expected:?}")]
    ShapeMismatch {
        /// The tensor's name.
        tensor: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        found: Vec<usize>,
    },
    /// The Hugging Face hub could not provide a file.
    #[error("hugging face hub, {repo}: {reason}")]
    Hub {
        /// The repo id.
        repo: String,
        /// What failed and how to fix it.
        reason: String,
    },
    /// A LoRA adapter does not fit the model or its configuration is invalid.
    #[error("LoRA adapter: {0}")]
    Adapter(String),
    /// An input batch is malformed (empty, ragged where it must not be, ids out of range).
    #[error("batch: {0}")]
    Batch(String),
    /// A conversation cannot be rendered or encoded (no template, template error, truncation).
    #[error("chat: {0}")]
    Chat(String),
    /// A tokenizer could not be loaded or failed on its input.
    #[error("tokenizer {source_name}: {reason}")]
    Tokenizer {
        /// The file or model the tokenizer came from.
        source_name: String,
        /// What went wrong and how to fix it.
        reason: String,
    },
    /// The model server could not start or run.
    #[error("abt serve: {0}")]
    Serve(String),
    /// Generation was asked for something it cannot do (bad options, context too long).
    #[error("generation: {0}")]
    Generate(String),
    /// A vocabulary of synthetic SQL domains is malformed.
    #[error("SQL domain vocabulary {source_name}: {reason}")]
    Vocabulary {
        /// Where the vocabulary came from (a path, or `embedded`).
        source_name: String,
        /// What is wrong, naming the domain, table and column.
        reason: String,
    },
    /// A teacher model's endpoint refused, failed or answered something unusable.
    #[error("teacher {endpoint}: {reason}")]
    Teacher {
        /// The endpoint's URL and model.
        endpoint: String,
        /// What went wrong and how to fix it.
        reason: String,
    },
    /// A run's report could not be checked in the browser (no Chromium, a page that failed).
    #[error("report: {0}")]
    Report(String),
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
