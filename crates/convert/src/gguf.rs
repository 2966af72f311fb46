//! A streaming GGUF (v3) writer: metadata and tensor descriptors first, then each tensor's
//! bytes in order, so a converter holds one tensor in memory at a time.
//!
//! Hand-written rather than a dependency: candle-core's `gguf_file::write` wants every tensor
//! as an in-memory `QTensor` at once (and brings candle's whole tensor stack to build), while
//! the format is small: magic `GGUF`, version u32, tensor count u64, KV count u64, the KVs
//! (key: u64 length + UTF-8, value type u32, value), the tensor infos (name, dimension count
//! u32, dimensions u64 innermost first, type u32, offset u64 from the data section), padding to
//! the alignment, then the data, each tensor padded to the alignment. Little-endian throughout.

use std::io::{self, Write};

/// Tensor data alignment (`general.alignment`'s default).
pub const ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::StrArray(_) | Value::I32Array(_) => 9,
        }
    }
}

/// Values per Q8_0 block (ggml's `QK8_0`).
pub const Q8_0_BLOCK: usize = 32;

/// Element types this writer emits (ggml's type ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    Bf16,
    /// Blocks of 32 values: an F16 scale and 32 signed bytes (rows a multiple of 32 long).
    Q8_0,
}

impl TensorType {
    pub fn id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q8_0 => 8,
            TensorType::Bf16 => 30,
        }
    }

    /// The type of a ggml type id this writer emits (F32 for any other).
    #[cfg(test)]
    pub(crate) fn from_id(id: u32) -> Self {
        match id {
            1 => TensorType::F16,
            8 => TensorType::Q8_0,
            30 => TensorType::Bf16,
            _ => TensorType::F32,
        }
    }

    /// Bytes of `elements` values.
    pub fn bytes_of(self, elements: u64) -> u64 {
        match self {
            TensorType::F32 => elements * 4,
            TensorType::F16 | TensorType::Bf16 => elements * 2,
            TensorType::Q8_0 => elements.div_ceil(Q8_0_BLOCK as u64) * (Q8_0_BLOCK as u64 + 2),
        }
    }
}

/// A tensor to be written: its GGUF name, its shape as the source lists it (outermost first,
/// row-major; GGUF stores it reversed) and its element type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<u64>,
    pub ty: TensorType,
}

impl TensorInfo {
    pub fn bytes(&self) -> u64 {
        self.ty.bytes_of(self.shape.iter().product::<u64>())
    }
}

fn padding(offset: u64) -> u64 {
    (ALIGNMENT - offset % ALIGNMENT) % ALIGNMENT
}

fn write_str(out: &mut impl Write, s: &str) -> io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s.as_bytes())
}

fn write_value(out: &mut impl Write, value: &Value) -> io::Result<()> {
    match value {
        Value::U32(v) => out.write_all(&v.to_le_bytes()),
        Value::I32(v) => out.write_all(&v.to_le_bytes()),
        Value::F32(v) => out.write_all(&v.to_le_bytes()),
        Value::Bool(v) => out.write_all(&[u8::from(*v)]),
        Value::Str(s) => write_str(out, s),
        Value::StrArray(items) => {
            out.write_all(&8u32.to_le_bytes())?;
            out.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|s| write_str(out, s))
        }
        Value::I32Array(items) => {
            out.write_all(&5u32.to_le_bytes())?;
            out.write_all(&(items.len() as u64).to_le_bytes())?;
            items
                .iter()
                .try_for_each(|v| out.write_all(&v.to_le_bytes()))
        }
    }
}

/// Writes a GGUF file: [`Writer::new`] writes the header (metadata and tensor infos), then
/// [`Writer::tensor`] is called once per tensor, in the order given, and [`Writer::finish`].
pub struct Writer<W: Write> {
    out: W,
    tensors: Vec<TensorInfo>,
    next: usize,
}

impl<W: Write> Writer<W> {
    pub fn new(
        mut out: W,
        metadata: &[(String, Value)],
        tensors: Vec<TensorInfo>,
    ) -> io::Result<Self> {
        let mut header = Vec::new();
        header.extend_from_slice(b"GGUF");
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata {
            write_str(&mut header, key)?;
            header.extend_from_slice(&value.type_id().to_le_bytes());
            write_value(&mut header, value)?;
        }
        let mut offset = 0u64;
        for t in &tensors {
            write_str(&mut header, &t.name)?;
            header.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for dim in t.shape.iter().rev() {
                header.extend_from_slice(&dim.to_le_bytes());
            }
            header.extend_from_slice(&t.ty.id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset += t.bytes();
            offset += padding(offset);
        }
        let pad = padding(header.len() as u64) as usize;
        header.resize(header.len() + pad, 0);
        out.write_all(&header)?;
        Ok(Self {
            out,
            tensors,
            next: 0,
        })
    }

    /// Writes the next tensor's data (`data.len()` must be its size in bytes).
    pub fn tensor(&mut self, data: &[u8]) -> io::Result<()> {
        let Some(info) = self.tensors.get(self.next) else {
            return Err(io::Error::other("more tensors written than declared"));
        };
        if data.len() as u64 != info.bytes() {
            return Err(io::Error::other(format!(
                "tensor {} has {} bytes, {} declared",
                info.name,
                data.len(),
                info.bytes()
            )));
        }
        self.out.write_all(data)?;
        let pad = padding(data.len() as u64) as usize;
        self.out.write_all(&[0u8; ALIGNMENT as usize][..pad])?;
        self.next += 1;
        Ok(())
    }

    /// Checks that every declared tensor was written and flushes.
    pub fn finish(mut self) -> io::Result<W> {
        if self.next != self.tensors.len() {
            return Err(io::Error::other(format!(
                "{} of {} tensors written",
                self.next,
                self.tensors.len()
            )));
        }
        self.out.flush()?;
        Ok(self.out)
    }
}
