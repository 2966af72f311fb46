//! AdamW (decoupled weight decay, bias-corrected moments), the update of candle-nn's `AdamW`,
//! with its moments exposed so that a checkpoint can save them and a resumed run continues
//! exactly where the interrupted one stopped (candle-nn's keeps them private).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::{FinetuneError, Result};

#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

pub struct AdamW {
    slots: Vec<Slot>,
    pub step: usize,
    pub params: AdamWParams,
}

impl AdamW {
    pub fn new(named: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let slots = named
            .into_iter()
            .map(|(name, var)| {
                let m = var.as_tensor().zeros_like()?;
                let v = var.as_tensor().zeros_like()?;
                Ok(Slot { name, var, m, v })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slots,
            step: 0,
            params,
        })
    }

    /// One update with `lr` (the schedule's rate for this step).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let p = self.params;
        let t = self.step as i32;
        let scale_m = 1.0 / (1.0 - p.beta1.powi(t));
        let scale_v = 1.0 / (1.0 - p.beta2.powi(t));
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let m = ((&s.m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            let v = ((&s.v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let update = ((&m * scale_m)? / ((&v * scale_v)?.sqrt()? + p.eps)?)?;
            let theta = (s.var.as_tensor() * (1.0 - lr * p.weight_decay))?;
            s.var.set(&(theta - (update * lr)?)?)?;
            s.m = m;
            s.v = v;
        }
        Ok(())
    }

    /// The moments by parameter name (`NAME.m`, `NAME.v`).
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for s in &self.slots {
            out.insert(format!("{}.m", s.name), s.m.clone());
            out.insert(format!("{}.v", s.name), s.v.clone());
        }
        out
    }

    /// Restore the moments saved by [`AdamW::state`] after `step` updates.
    pub fn restore(&mut self, state: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        for s in &mut self.slots {
            let get = |k: String| {
                state
                    .get(&k)
                    .cloned()
                    .ok_or_else(|| FinetuneError::Checkpoint(format!("the checkpoint lacks {k}")))
            };
            let m = get(format!("{}.m", s.name))?;
            let v = get(format!("{}.v", s.name))?;
            if m.dims() != s.var.dims() || v.dims() != s.var.dims() {
                return Err(FinetuneError::Checkpoint(format!(
                    "optimizer state for {} has the wrong shape",
                    s.name
                )));
            }
            s.m = m;
            s.v = v;
        }
        self.step = step;
        Ok(())
    }
}
