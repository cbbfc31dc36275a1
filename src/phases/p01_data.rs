//! Phase 01 (notebook `01_data`, `abt data`): the SFT set.

use crate::chat::Tokenizer;
use crate::config::RunContext;
use crate::data::{DataConfig, DataReport, SftRecord, build_sft, write_sft};
use crate::error::Result;

use super::Phase;

/// Builds the SFT set of `config` (length-filtered with `tokenizer` when one is given) and
/// writes `sft.jsonl` and `report.json` into the run's `01_data`.
pub fn build(
    ctx: &RunContext,
    config: &DataConfig,
    tokenizer: Option<&Tokenizer>,
) -> Result<(Vec<SftRecord>, DataReport)> {
    let (records, report) = build_sft(config, tokenizer)?;
    write_sft(&ctx.phase_dir(Phase::Data), &records, &report)?;
    Ok((records, report))
}

/// One line per source of `report`: kept of attempted, repairs, negatives.
pub fn source_lines(report: &DataReport) -> Vec<String> {
    report
        .sources
        .iter()
        .map(|s| {
            format!(
                "{:<14} {:<6} kept {:>6} / {:<6} repaired {:>4} negatives {:>4}",
                s.source,
                s.protocol.map(|p| format!("{p:?}")).unwrap_or_default(),
                s.kept,
                s.attempted,
                s.repaired,
                s.negatives
            )
        })
        .collect()
}
