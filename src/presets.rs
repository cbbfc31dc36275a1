//! Presets as data: the settings of every phase under a profile and a scale, read from
//! `configs/profiles/<profile>.toml` (a profile `extends` another, or `recipe.toml`, the
//! method's settings, and replaces some of its keys) and `configs/scales/<scale>.toml` (whose keys replace the profile's), validated in one
//! place: a key no phase knows is an error naming the file and the key.
//!
//! The files are built into the library, so a notebook or `abt` reads the same settings from any
//! directory; `abt config --profile P --scale S` prints what a run resolves to, and notebook 00
//! shows the same table.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use toml::{Table, Value};

use crate::config::{Profile, RunContext, Scale};
use crate::data::DataConfig;
use crate::display::Show;
use crate::error::{Error, Result};
use crate::eval::{DbBenchConfig, QuickConfig};
use crate::model::nf4::ModelSettings;
use crate::pairs::{PairsConfig, StepLevelConfig};
use crate::prompts::PromptConfig;
use crate::table::Table as HtmlTable;
use crate::train::{DpoConfig, GrpoConfig, RftConfig, SftConfig};

/// The profile files by name: the profiles, and `recipe`, the base they extend.
const PROFILES: [(&str, &str); 5] = [
    ("recipe", include_str!("../configs/profiles/recipe.toml")),
    ("tiny", include_str!("../configs/profiles/tiny.toml")),
    (
        "colab-qwen2.5-7b",
        include_str!("../configs/profiles/colab-qwen2.5-7b.toml"),
    ),
    (
        "colab-qwen2.5-7b-qlora",
        include_str!("../configs/profiles/colab-qwen2.5-7b-qlora.toml"),
    ),
    (
        "colab-qwen3-4b",
        include_str!("../configs/profiles/colab-qwen3-4b.toml"),
    ),
];

/// The scale files, by scale name.
const SCALES: [(&str, &str); 3] = [
    ("full", include_str!("../configs/scales/full.toml")),
    ("short", include_str!("../configs/scales/short.toml")),
    ("smoke", include_str!("../configs/scales/smoke.toml")),
];

/// What every phase does in a run: one section per phase, as in the files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presets {
    /// How the base model is stored (QLoRA or not), for every phase that loads it.
    #[serde(default)]
    pub model: ModelSettings,
    /// Phase 01: the SFT corpus.
    pub data: DataConfig,
    /// Phase 02: the prompts pairs and GRPO sample from.
    pub prompts: PromptConfig,
    /// Phase 03: supervised fine-tuning.
    pub sft: SftConfig,
    /// Phase 04: best-of-N preference pairs.
    pub pairs: PairsConfig,
    /// Phase 04: step-level pairs.
    pub step_level: StepLevelConfig,
    /// Phase 05: DPO.
    pub dpo: DpoConfig,
    /// Phase 05: rejection-sampling fine-tuning.
    pub rft: RftConfig,
    /// Phase 05: GRPO.
    pub grpo: GrpoConfig,
    /// The quick score on the dev split, for choosing settings (notebooks 03-05, GRPO's
    /// in-training evaluation, `abt quick-score`).
    pub quick: QuickConfig,
    /// The final comparison on the test split (notebook 06, `abt heldout`).
    pub heldout: QuickConfig,
    /// Phase 06: AgentBench's DB Bench dev items.
    pub dbbench: DbBenchConfig,
}

/// One file of a resolution: where it is and what it says.
struct Layer {
    file: String,
    table: Table,
}

fn invalid(source_name: &str, reason: impl ToString) -> Error {
    Error::InvalidConfig {
        source_name: source_name.into(),
        reason: reason.to_string(),
    }
}

fn parse(file: &str, text: &str) -> Result<Table> {
    text.parse::<Table>().map_err(|e| Error::InvalidConfig {
        source_name: file.into(),
        reason: e.to_string(),
    })
}

/// The layers of `profile` at `scale`: the profile's chain of files, base first, then the scale.
fn layers(profile: Profile, scale: Scale) -> Result<Vec<Layer>> {
    let mut layers = profile_layers(profile.name(), 0)?;
    let (_, text) = SCALES
        .iter()
        .find(|(n, _)| *n == scale.name())
        .ok_or_else(|| Error::InvalidConfig {
            source_name: "configs/scales".into(),
            reason: format!("no file for the scale {}", scale.name()),
        })?;
    let file = format!("configs/scales/{}.toml", scale.name());
    layers.push(Layer {
        table: parse(&file, text)?,
        file,
    });
    Ok(layers)
}

/// The profile's file and those it extends, base first.
fn profile_layers(name: &str, depth: usize) -> Result<Vec<Layer>> {
    let Some((_, text)) = PROFILES.iter().find(|(n, _)| *n == name) else {
        return Err(invalid(
            "configs/profiles",
            format!(
                "no profile file {name}.toml to extend (there are {})",
                PROFILES.map(|(n, _)| n).join(", ")
            ),
        ));
    };
    let file = format!("configs/profiles/{name}.toml");
    let mut table = parse(&file, text)?;
    let mut layers = match table.remove("extends") {
        None => Vec::new(),
        Some(Value::String(parent)) if depth < PROFILES.len() => {
            profile_layers(&parent, depth + 1)?
        }
        Some(other) => {
            return Err(Error::InvalidConfig {
                source_name: file,
                reason: format!("`extends` must name another profile, not {other}"),
            });
        }
    };
    layers.push(Layer { file, table });
    Ok(layers)
}

/// `over`'s keys replace `base`'s; tables merge key by key.
fn merge(base: &mut Table, over: &Table) {
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The dotted keys of `table` (leaves only).
fn leaf_keys(table: &Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        match value {
            Value::Table(t) => leaf_keys(t, &format!("{path}."), out),
            _ => out.push(path),
        }
    }
}

/// Whether the dotted `key` names a value in `value` (a serialized [`Presets`]).
fn has_key(value: &Json, key: &str) -> bool {
    key.split('.')
        .try_fold(value, |v, part| v.get(part))
        .is_some()
}

impl Presets {
    /// The settings of `profile` at `scale`.
    pub fn resolve(profile: Profile, scale: Scale) -> Result<Self> {
        Self::from_layers(&layers(profile, scale)?)
    }

    /// The files the settings of `profile` at `scale` are read from, base first.
    pub fn files(profile: Profile, scale: Scale) -> Result<Vec<String>> {
        Ok(layers(profile, scale)?
            .into_iter()
            .map(|l| l.file)
            .collect())
    }

    /// The settings of a run's profile and scale.
    pub fn for_run(ctx: &RunContext) -> Result<Self> {
        Self::resolve(ctx.profile, ctx.scale)
    }

    fn from_layers(layers: &[Layer]) -> Result<Self> {
        let mut merged = Table::new();
        for layer in layers {
            merge(&mut merged, &layer.table);
        }
        let names = layers
            .iter()
            .map(|l| l.file.as_str())
            .collect::<Vec<_>>()
            .join(" + ");
        let mut presets: Presets =
            Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| Error::InvalidConfig {
                    source_name: names.clone(),
                    reason: e.to_string(),
                })?;
        // A key the settings do not read (a misspelling inside a phase's section, whose
        // flattened training arguments keep serde from refusing it) names its file.
        let known = serde_json::to_value(&presets).map_err(|e| invalid(&names, e))?;
        for layer in layers {
            let mut keys = Vec::new();
            leaf_keys(&layer.table, "", &mut keys);
            if let Some(unknown) = keys.iter().find(|k| !has_key(&known, k)) {
                return Err(Error::InvalidConfig {
                    source_name: layer.file.clone(),
                    reason: format!("unknown key `{unknown}`"),
                });
            }
        }
        let checked = presets
            .sft
            .train
            .validate("sft")
            .and_then(|()| presets.dpo.train.validate("dpo"))
            .and_then(|()| presets.rft.sft.train.validate("rft"))
            .and_then(|()| presets.rft.validate())
            .and_then(|()| presets.grpo.validate());
        checked.map_err(|e| invalid(&names, e))?;
        for path in presets
            .data
            .eval_files
            .iter_mut()
            .chain(presets.pairs.eval_files.iter_mut())
        {
            *path = crate::paths::resolve(&*path);
        }
        Ok(presets)
    }

    /// Every setting as `(section.key, value)`, in the files' order of sections.
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Ok(Json::Object(sections)) = serde_json::to_value(self) {
            for (section, value) in sections {
                flatten(&section, &value, &mut out);
            }
        }
        out
    }

    /// The settings as a TOML document (the form of the files, every key given).
    pub fn to_toml(&self) -> Result<String> {
        let value = serde_json::to_value(self).map_err(|e| invalid("presets", e))?;
        let table: Table =
            serde_json::from_value(tidy(value)).map_err(|e| invalid("presets", e))?;
        toml::to_string(&table).map_err(|e| invalid("presets", e))
    }
}

/// `value` without nulls (TOML has none), floats at their shortest.
fn tidy(value: Json) -> Json {
    match crate::table::shortest_floats(value) {
        Json::Object(map) => Json::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, tidy(v)))
                .collect(),
        ),
        Json::Array(items) => Json::Array(items.into_iter().map(tidy).collect()),
        other => other,
    }
}

fn flatten(prefix: &str, value: &Json, out: &mut Vec<(String, String)>) {
    match value {
        Json::Object(map) => {
            for (key, v) in map {
                flatten(&format!("{prefix}.{key}"), v, out);
            }
        }
        Json::Null => out.push((prefix.to_string(), "—".into())),
        Json::String(s) => out.push((prefix.to_string(), s.clone())),
        Json::Array(items) if items.is_empty() => out.push((prefix.to_string(), "—".into())),
        Json::Array(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|v| match tidy(v.clone()) {
                    Json::String(s) => s,
                    other => other.to_string(),
                })
                .collect();
            out.push((prefix.to_string(), items.join(", ")));
        }
        other => out.push((prefix.to_string(), tidy(other.clone()).to_string())),
    }
}

impl Show for Presets {
    fn mime_bundle(&self) -> Vec<(&'static str, String)> {
        HtmlTable::settings("settings of every phase", self.settings()).mime_bundle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(file: &str, text: &str) -> Layer {
        Layer {
            file: file.into(),
            table: parse(file, text).unwrap(),
        }
    }

    #[test]
    fn every_profile_resolves_at_every_scale() {
        for profile in Profile::ALL {
            for scale in [Scale::Full, Scale::Short, Scale::Smoke] {
                let presets = Presets::resolve(profile, scale)
                    .unwrap_or_else(|e| panic!("{profile} {}: {e}", scale.name()));
                assert!(presets.data.eval_files.iter().all(|p| p.is_absolute()));
            }
        }
    }

    #[test]
    fn scales_replace_the_profiles_values() {
        let full = Presets::resolve(Profile::Tiny, Scale::Full).unwrap();
        let short = Presets::resolve(Profile::Tiny, Scale::Short).unwrap();
        assert_eq!(full.sft.max_steps, Some(120));
        assert_eq!(short.sft.max_steps, Some(10));
        // The main job keeps the smaller corpus and short rows; the full scale trains whole
        // household games.
        assert_eq!((full.data.synthetic_sql, full.sft.max_len), (1200, 4096));
        assert_eq!((short.data.synthetic_sql, short.sft.max_len), (240, 1024));
        assert_eq!(short.sft.train.learning_rate, full.sft.train.learning_rate);
        let qwen3 = Presets::resolve(Profile::ColabQwen3_4b, Scale::Full).unwrap();
        let qwen25 = Presets::resolve(Profile::ColabQwen25_7b, Scale::Full).unwrap();
        assert_eq!(qwen3.sft.train.learning_rate, 5e-5);
        assert_eq!(qwen25.sft.train.learning_rate, 2e-5);
        // The 4B profile generates fewer episodes at once (sized for an L4), nothing else.
        assert_eq!(
            (qwen3.grpo.rollout_batch, qwen25.grpo.rollout_batch),
            (8, 16)
        );
        let same_rollouts = GrpoConfig {
            rollout_batch: qwen25.grpo.rollout_batch,
            ..qwen3.grpo.clone()
        };
        assert_eq!(same_rollouts, qwen25.grpo);
        // The Colab profiles read the real corpora; `tiny` downloads nothing.
        assert!(qwen25.data.spider.is_some() && qwen25.data.chat.is_some());
        assert_eq!(qwen25.data.react.len(), 2);
        assert_eq!(qwen3.data, qwen25.data);
        assert!(
            full.data.spider.is_none() && full.data.react.is_empty() && full.data.chat.is_none()
        );
    }

    #[test]
    fn evaluations_use_disjoint_splits_and_let_the_expert_finish_every_game() {
        use crate::env::household::ExpertOptions;
        use crate::prompts::{Prompt, Split};
        for profile in Profile::ALL {
            let full = Presets::resolve(profile, Scale::Full).unwrap();
            assert_eq!(
                (full.quick.split, full.heldout.split),
                (Split::Dev, Split::Test)
            );
            assert!(full.heldout.db >= 300 && full.heldout.household >= 60);
            // Every cap on household replies, with the games it applies to: the evaluations'
            // held-out games, and phase 02's prompts for pairs and GRPO.
            let prompts = crate::prompts::build_prompts(&full.prompts).unwrap();
            let caps = [
                (
                    "quick",
                    full.quick.household_turns,
                    full.quick.tasks().unwrap(),
                ),
                (
                    "heldout",
                    full.heldout.household_turns,
                    full.heldout.tasks().unwrap(),
                ),
                ("pairs", full.pairs.household_turns, prompts.clone()),
                ("grpo", full.grpo.household_turns, prompts),
            ];
            for (section, cap, tasks) in caps {
                for task in tasks {
                    let Prompt::Household(game) = &task else {
                        continue;
                    };
                    let env = crate::env::household::HouseholdEnv::with_kind(game.seed, game.kind);
                    let needed = env.expert_replies(ExpertOptions::default()).len();
                    assert!(
                        needed <= cap,
                        "{profile}: the expert needs {needed} replies for game {} ({:?}), \
                         [{section}] allows {cap}",
                        game.seed,
                        game.kind,
                    );
                }
            }
            // The short and smoke runs compare on the quick score's tasks, reusing its scores.
            for scale in [Scale::Short, Scale::Smoke] {
                let presets = Presets::resolve(profile, scale).unwrap();
                assert_eq!(presets.heldout, presets.quick, "{profile} {}", scale.name());
            }
        }
    }

    #[test]
    fn unknown_keys_name_their_file_and_key() {
        let (_, base) = PROFILES[0];
        let layers = [
            layer("configs/profiles/recipe.toml", base),
            layer("mine.toml", "[sft]\nlearning_rat = 1e-4\n"),
        ];
        let err = Presets::from_layers(&layers).unwrap_err().to_string();
        assert!(
            err.contains("mine.toml") && err.contains("sft.learning_rat"),
            "{err}"
        );
        let layers = [
            layer("configs/profiles/recipe.toml", base),
            layer("mine.toml", "[sft.lora]\nrank = 8\n"),
        ];
        let err = Presets::from_layers(&layers).unwrap_err().to_string();
        assert!(err.contains("sft.lora.rank"), "{err}");
        let layers = [
            layer("configs/profiles/recipe.toml", base),
            layer("mine.toml", "[sftt]\nmax_steps = 3\n"),
        ];
        let err = Presets::from_layers(&layers).unwrap_err().to_string();
        assert!(err.contains("sftt"), "{err}");
        // A value a run cannot start with is refused here, not at the run's first step.
        let layers = [
            layer("configs/profiles/recipe.toml", base),
            layer("mine.toml", "[grpo]\ngroup_size = 1\n"),
        ];
        let err = Presets::from_layers(&layers).unwrap_err().to_string();
        assert!(
            err.contains("mine.toml") && err.contains("group_size"),
            "{err}"
        );
        // A wrong type is refused too.
        let layers = [
            layer("configs/profiles/recipe.toml", base),
            layer("mine.toml", "[sft]\nmax_steps = \"ten\"\n"),
        ];
        assert!(Presets::from_layers(&layers).is_err());
    }

    #[test]
    fn the_printed_toml_reads_back_as_the_same_settings() {
        let presets = Presets::resolve(Profile::Tiny, Scale::Short).unwrap();
        let text = presets.to_toml().unwrap();
        assert!(text.contains("dropout = 0.05\n"), "{text}");
        let again = Presets::from_layers(&[layer("printed.toml", &text)]).unwrap();
        assert_eq!(again, presets);
        let settings = presets.settings();
        assert!(settings.contains(&("sft.learning_rate".into(), "0.002".into())));
        assert!(settings.contains(&(
            "sft.lora.targets".into(),
            "q, k, v, o, gate, up, down".into()
        )));
    }
}
