//! The adapter as a GGUF LoRA, the format of llama.cpp's `convert_lora_to_gguf.py` that
//! `llama_adapter_lora_init` loads: `general.type = adapter`, `adapter.type = lora`,
//! `adapter.lora.alpha`, `general.architecture` equal to the base model's, and per adapted
//! weight `blk.N.attn_q.weight.lora_a` with ggml shape `[n_embd_in, rank]` and `…lora_b` with
//! `[rank, n_out]` (row-major `[rank, in]` and `[out, rank]`, PEFT's layout; llama.cpp checks
//! `a.ne[0] == w.ne[0]`, `b.ne[1] == w.ne[1]`, `a.ne[1] == b.ne[0]`). Tied embeddings leave no
//! `output.weight` to adapt; only `q` and `v` are.

use std::io::{Seek, Write};
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};

use crate::lora::LoraParams;
use crate::{FinetuneError, Result};

/// Write the adapter to `out`.
pub fn write_adapter<W: Write + Seek>(
    out: &mut W,
    lora: &LoraParams,
    architecture: &str,
    name: &str,
) -> Result<()> {
    let tensors = lora
        .named()
        .into_iter()
        .map(|(n, v)| Ok((n, QTensor::quantize(v.as_tensor(), GgmlDType::F32)?)))
        .collect::<Result<Vec<_>>>()?;
    let metadata = [
        (
            "general.architecture",
            Value::String(architecture.to_owned()),
        ),
        ("general.type", Value::String("adapter".into())),
        ("general.name", Value::String(name.to_owned())),
        ("adapter.type", Value::String("lora".into())),
        ("adapter.lora.alpha", Value::F32(lora.config.alpha)),
    ];
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(out, &md, &ts)?;
    Ok(())
}

/// Write the adapter to the file `path` (through a temporary file and a rename, so a reader
/// never sees half an adapter).
pub fn save_adapter(path: &Path, lora: &LoraParams, architecture: &str, name: &str) -> Result<()> {
    let tmp = path.with_extension("gguf.part");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write_adapter(&mut f, lora, architecture, name)?;
        f.flush()?;
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        FinetuneError::Checkpoint(format!("cannot write the adapter {}: {e}", path.display()))
    })
}
