//! Everything a notebook needs in one `use agentbench_tuning::prelude::*;`.

// candle itself, so that evcxr can name the types of notebook variables (`candle_core::Device`).
pub use candle_core::{self, DType, Device, Tensor};

pub use crate::cache::{Fingerprint, reuse_or};
pub use crate::chat::{Conversation, Message, RenderOptions, Role, Tokenizer, Tool, ToolCall};
pub use crate::config::{Profile, RunContext, Scale};
pub use crate::display::Show;
pub use crate::env::db::DbEnv;
pub use crate::env::household::{ExpertOptions, HouseholdEnv, TaskKind, World};
pub use crate::env::{Environment, Protocol};
pub use crate::error::{Error, Result};
pub use crate::eval::{
    QuickConfig, QuickScore, compare, quick_score, quick_score_path, saved_quick_score,
};
pub use crate::generate::{
    ChatModel, Episode, GenerateOptions, Generation, RolloutOptions, Sampling, rollout,
};
pub use crate::memory::{Gpu, Overrides, Place, Plan};
pub use crate::model::{Decoder, Mode, ModelSource};
pub use crate::phases::{self, Phase, TrainingPhase, load_policy};
pub use crate::plot::{BarChart, Histogram, LineChart, Svg};
pub use crate::presets::Presets;
pub use crate::progress::Progress;
pub use crate::prompts::{Prompt, Split};
pub use crate::report::RunReport;
pub use crate::system::{
    GpuInfo, SystemReport, compute_dtype, device, device_name, gpu_info, matmul_gflops,
};
pub use crate::table::Table;
pub use crate::transcript::Transcript;
