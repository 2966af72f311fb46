//! The element types a converted weight matrix may be stored in, and the encoders from the
//! checkpoint's values: F32, F16, BF16 (rounded to nearest even, by the `half` crate) and
//! ggml's Q8_0 (blocks of 32 values: an F16 scale, `max |x| / 127`, and 32 signed bytes).

use half::{bf16, f16};
use safetensors::Dtype;

use crate::gguf::{TensorType, Q8_0_BLOCK};

/// What `flywheel convert --outtype` asks for the model's weight matrices, the token embedding
/// table included (position and token-type tables, biases and norms stay F32, as llama.cpp's
/// own converter keeps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutType {
    /// As the checkpoint stores them: F16 matrices stay F16, everything else becomes F32.
    #[default]
    Source,
    F32,
    F16,
    Bf16,
    /// 8-bit blocks: a quarter of F32's size, and the integer (AVX-VNNI, AMX) matrix kernels.
    Q8_0,
}

impl OutType {
    /// Parses `source`, `f32`, `f16`, `bf16` or `q8_0`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "source" => Self::Source,
            "f32" => Self::F32,
            "f16" => Self::F16,
            "bf16" => Self::Bf16,
            "q8_0" => Self::Q8_0,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::Q8_0 => "q8_0",
        }
    }

    /// The type of the tensor `gguf_name` of `shape` (outermost first) whose checkpoint
    /// dtype is `dtype`.
    pub(crate) fn tensor_type(self, gguf_name: &str, shape: &[u64], dtype: Dtype) -> TensorType {
        let matrix = shape.len() == 2 && !is_embedding_table(gguf_name);
        let row = shape.last().copied().unwrap_or(0);
        match (self, matrix) {
            (_, false) | (Self::F32, _) => TensorType::F32,
            (Self::Source, true) if dtype == Dtype::F16 => TensorType::F16,
            (Self::Source, true) => TensorType::F32,
            (Self::F16, true) => TensorType::F16,
            (Self::Bf16, true) => TensorType::Bf16,
            // ggml quantizes whole rows of 32-value blocks; another row length stays F16.
            (Self::Q8_0, true) if row % Q8_0_BLOCK as u64 == 0 => TensorType::Q8_0,
            (Self::Q8_0, true) => TensorType::F16,
        }
    }
}

/// The small tables looked up by row (position, token type) stay F32, as llama.cpp's own
/// converter keeps them; the token embedding table is a matrix like the others (half of
/// MiniLM's bytes).
fn is_embedding_table(gguf_name: &str) -> bool {
    matches!(gguf_name, "position_embd.weight" | "token_types.weight")
}

/// The checkpoint's values as F32.
pub(crate) fn to_f32(dtype: Dtype, data: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        // `convert_bert` plans only F32, F16 and BF16 tensors.
        _ => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    }
}

/// The tensor's bytes in `ty` (little-endian), from the checkpoint's bytes.
pub(crate) fn encode(dtype: Dtype, data: &[u8], ty: TensorType) -> Vec<u8> {
    match (dtype, ty) {
        (Dtype::F32, TensorType::F32) | (Dtype::F16, TensorType::F16) => return data.to_vec(),
        (Dtype::BF16, TensorType::Bf16) => return data.to_vec(),
        _ => {}
    }
    let values = to_f32(dtype, data);
    match ty {
        TensorType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        TensorType::F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        TensorType::Bf16 => values
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        TensorType::Q8_0 => quantize_q8_0(&values),
    }
}

/// ggml's reference Q8_0 quantization (`quantize_row_q8_0_ref`): per block of 32, the scale
/// `d = max |x| / 127` stored as F16, and each value as `round(x / d)`.
pub(crate) fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / Q8_0_BLOCK * (Q8_0_BLOCK + 2));
    for block in values.chunks(Q8_0_BLOCK) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inverse = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        for i in 0..Q8_0_BLOCK {
            let v = block.get(i).copied().unwrap_or(0.0);
            // In [-127, 127] by construction of `d`; the cast cannot wrap.
            out.push((v * inverse).round() as i8 as u8);
        }
    }
    out
}

/// Q8_0 blocks back to F32 (for tests and error measurements).
#[cfg(test)]
pub(crate) fn dequantize_q8_0(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(Q8_0_BLOCK + 2)
        .flat_map(|b| {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            b[2..].iter().map(move |q| f32::from(*q as i8) * d)
        })
        .collect()
}
