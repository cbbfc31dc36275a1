//! Writes a random LoRA adapter (PEFT layout), its merged model and its logits for a fixture batch,
//! so `scripts/check_peft_export.sh` can load them with PEFT and transformers and compare.
//!
//! ```text
//! cargo run --example export_adapter -- tests/fixtures/model/qwen3 /tmp/peft-export
//! ```

use std::collections::HashMap;
use std::path::PathBuf;

use agentbench_tuning::model::{Decoder, LoraConfig, Mode, ModelSource, Target, TokenBatch};
use candle_core::{DType, Device};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, out_dir] = args.as_slice() else {
        return Err("usage: export_adapter <fixture model dir> <output dir>".into());
    };
    let (model_dir, out) = (PathBuf::from(model_dir), PathBuf::from(out_dir));
    let device = Device::Cpu;
    let mut model = Decoder::load(&ModelSource::Dir(model_dir.clone()), &device, DType::F32)?;
    model.add_lora(&LoraConfig {
        r: 4,
        alpha: 8.0,
        use_rslora: true,
        targets: vec![Target::Q, Target::O, Target::Up, Target::Down],
        ..LoraConfig::default()
    })?;
    for var in model.trainable_vars() {
        var.set(&var.as_tensor().randn_like(0.0, 0.2)?)?;
    }
    let expected = candle_core::safetensors::load(model_dir.join("expected.safetensors"), &device)?;
    let to_vec = |name: &str| -> Result<Vec<i64>, candle_core::Error> {
        expected[name].flatten_all()?.to_vec1::<i64>()
    };
    let rows = expected["input_ids"].dim(0)?;
    let ids = to_vec("input_ids")?.into_iter().map(|i| i as u32).collect();
    let mask = to_vec("attention_mask")?
        .into_iter()
        .map(|m| m as u8)
        .collect();
    let batch = TokenBatch::from_parts(ids, mask, rows, &device)?;
    let logits = model.forward(&batch, Mode::Eval)?;
    model.save_adapter(&out, &model_dir.display().to_string())?;
    model.save_merged(&out.join("merged"))?;
    candle_core::safetensors::save(
        &HashMap::from([("logits".to_string(), logits)]),
        out.join("rust_logits.safetensors"),
    )?;
    println!("wrote {}", out.display());
    Ok(())
}
