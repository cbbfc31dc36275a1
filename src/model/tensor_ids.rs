//! Tensor ids that stay unique in a notebook kernel.
//!
//! candle keys gradients by tensor id, drawn from a counter in a `static`. evcxr links every
//! cell's library statically, so each cell carries its own copy of that counter, starting at 1:
//! a LoRA variable made in one cell can share its id with a tensor made while training in a
//! later cell, and backpropagation then mixes their gradients (notebook 05 failed with
//! "shape mismatch in add"; where shapes agree it would be silent). Before a training pass,
//! [`ids_past`] draws ids from the running copy of the counter until it is past every
//! trainable variable's id, so the pass's tensors can collide with none of them. Outside a
//! notebook the counter is already past them and this costs one probe.

use candle_core::{Tensor, Var};

/// The number inside a tensor's id (candle keeps it private; its `Debug` form shows it).
fn id_number(t: &Tensor) -> usize {
    let text = format!("{:?}", t.id());
    text.trim_start_matches("TensorId(")
        .trim_end_matches(')')
        .parse()
        .unwrap_or(0)
}

/// Advances this code's copy of candle's tensor-id counter past the ids of `vars`.
pub fn ids_past(vars: &[Var]) {
    let Some(max) = vars.iter().map(|v| id_number(v.as_tensor())).max() else {
        return;
    };
    let probe = vars[0].as_tensor();
    // Detaching a variable makes a tensor with a fresh id and no copy of the data.
    let mut next = id_number(&probe.detach());
    while next <= max {
        for _ in next..=max {
            let _ = probe.detach();
        }
        next = id_number(&probe.detach());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn new_tensors_come_after_the_variables() {
        let vars: Vec<Var> = (0..3)
            .map(|i| Var::new(&[i as f32], &Device::Cpu).unwrap())
            .collect();
        let max = vars.iter().map(|v| id_number(v.as_tensor())).max().unwrap();
        assert!(max > 0);
        ids_past(&vars);
        let t = Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(id_number(&t) > max);
        ids_past(&[]);
    }
}
