//! Writes a random LoRA adapter (PEFT layout), its merged model and its logits for a fixture batch,
//! so `scripts/check_peft_export.sh` can load them with PEFT and transformers and compare.
//!
//! With `--qlora` the base is quantised to NF4 first and the adapter then trained for three AdamW
//! steps on the batch through the quantised base (QLoRA); the logits are the quantised model's.
//!
//! ```text
//! cargo run --example export_adapter -- tests/fixtures/model/qwen3 /tmp/peft-export [--qlora]
//! ```

use std::collections::HashMap;
use std::path::PathBuf;

use agentbench_tuning::model::{
    Decoder, LoraConfig, Mode, ModelSource, Nf4Config, Target, TokenBatch,
};
use candle_core::{DType, Device};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (paths, qlora) = match args.as_slice() {
        [paths @ .., flag] if flag == "--qlora" => (paths, true),
        paths => (paths, false),
    };
    let [model_dir, out_dir] = paths else {
        return Err("usage: export_adapter <fixture model dir> <output dir> [--qlora]".into());
    };
    let (model_dir, out) = (PathBuf::from(model_dir), PathBuf::from(out_dir));
    let device = Device::Cpu;
    let mut model = Decoder::load(&ModelSource::Dir(model_dir.clone()), &device, DType::F32)?;
    if qlora {
        // Single quantisation: bitsandbytes' CPU kernel rounds a few double-quantised scales
        // differently (docs/memory.md), and this check compares logits at 1e-4.
        model.quantize(Nf4Config {
            double_quant: false,
        })?;
    }
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
    if qlora {
        let mut opt = <candle_nn::AdamW as candle_nn::Optimizer>::new(
            model.trainable_vars(),
            candle_nn::ParamsAdamW {
                lr: 1e-2,
                ..Default::default()
            },
        )?;
        for step in 0..3 {
            let loss = model
                .token_logprobs(&batch, Mode::Train)?
                .sum_all()?
                .neg()?;
            println!("QLoRA step {step}: loss {:.4}", loss.to_scalar::<f32>()?);
            candle_nn::Optimizer::step(&mut opt, &model.backward(&loss)?)?;
        }
    }
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
