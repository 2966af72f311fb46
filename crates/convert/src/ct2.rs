//! A reader of CTranslate2's `model.bin` (binary version 6), the format faster-whisper loads.
//!
//! The layout, all little-endian: `u32` binary version, the spec name (a string), `u32` spec
//! revision, `u32` variable count, then per variable: its name, `u8` rank, `u32` per dimension,
//! `u8` data type (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16), `u32` byte count and the bytes;
//! then `u32` alias count and per alias two strings (the alias, the variable it names). A string
//! is a `u16` length that counts a trailing NUL, the UTF-8 bytes and that NUL.
//!
//! Variables borrow the file's bytes (a memory map); nothing is copied.

use std::collections::BTreeMap;

use crate::{ConvertError, Result};

/// The binary version this reader knows.
pub const BINARY_VERSION: u32 = 6;

/// A variable's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl DType {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => DType::F32,
            1 => DType::I8,
            2 => DType::I16,
            3 => DType::I32,
            4 => DType::F16,
            5 => DType::BF16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// One variable: shape (outermost first, empty for a scalar), type and bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable<'a> {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub data: &'a [u8],
}

impl Variable<'_> {
    /// A scalar integer (booleans are stored as i8).
    pub fn int(&self) -> Option<i64> {
        if !self.shape.is_empty() {
            return None;
        }
        let b = self.data;
        Some(match self.dtype {
            DType::I8 => i64::from(i8::from_le_bytes([*b.first()?])),
            DType::I16 => i64::from(i16::from_le_bytes(b.get(..2)?.try_into().ok()?)),
            DType::I32 => i64::from(i32::from_le_bytes(b.get(..4)?.try_into().ok()?)),
            _ => return None,
        })
    }
}

/// A parsed `model.bin`.
#[derive(Debug)]
pub struct Model<'a> {
    /// The specification's name (`WhisperSpec` for Whisper).
    pub spec: String,
    pub revision: u32,
    /// Variables by name, aliases resolved to the variable they name.
    pub variables: BTreeMap<String, Variable<'a>>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn truncated(what: &str, at: usize) -> ConvertError {
    ConvertError::Format(format!(
        "model.bin is truncated or not a CTranslate2 model: {what} at byte {at} runs past the end"
    ))
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| truncated(what, self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.at;
        let n = usize::from(self.u16(what)?);
        let b = self.take(n, what)?;
        let text = b.strip_suffix(&[0]).ok_or_else(|| {
            ConvertError::Format(format!(
                "model.bin: the {what} at byte {at} is not NUL-terminated; not a CTranslate2 model"
            ))
        })?;
        String::from_utf8(text.to_vec()).map_err(|_| {
            ConvertError::Format(format!("model.bin: the {what} at byte {at} is not UTF-8"))
        })
    }
}

/// Parses a whole `model.bin` held in `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Model<'_>> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.u32("binary version")?;
    if version != BINARY_VERSION {
        return Err(ConvertError::Format(format!(
            "model.bin has CTranslate2 binary version {version}; this converter reads version \
             {BINARY_VERSION} (CTranslate2 3.x and 4.x). Convert the model again with a current \
             ct2-transformers-converter."
        )));
    }
    let spec = r.string("spec name")?;
    let revision = r.u32("spec revision")?;
    let count = r.u32("variable count")?;
    let mut variables = BTreeMap::new();
    for _ in 0..count {
        let name = r.string("variable name")?;
        let rank = r.u8("rank")?;
        let shape = (0..rank)
            .map(|_| r.u32("dimension").map(|d| d as usize))
            .collect::<Result<Vec<_>>>()?;
        let at = r.at;
        let dtype = r.u8("data type")?;
        let dtype = DType::from_id(dtype).ok_or_else(|| {
            ConvertError::Format(format!(
                "model.bin: variable '{name}' has unknown data type {dtype} (byte {at})"
            ))
        })?;
        let len = r.u32("byte count")? as usize;
        let elements = shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d));
        if elements.and_then(|n| n.checked_mul(dtype.size())) != Some(len) {
            return Err(ConvertError::Format(format!(
                "model.bin: variable '{name}' of shape {shape:?} and type {dtype:?} says it has \
                 {len} bytes, which does not match"
            )));
        }
        let data = r.take(len, "variable data")?;
        variables.insert(name, Variable { shape, dtype, data });
    }
    let aliases = r.u32("alias count")?;
    for _ in 0..aliases {
        let alias = r.string("alias name")?;
        let target = r.string("alias target")?;
        let var = variables.get(&target).cloned().ok_or_else(|| {
            ConvertError::Format(format!(
                "model.bin: alias '{alias}' names '{target}', which is not a variable"
            ))
        })?;
        variables.insert(alias, var);
    }
    if r.at != bytes.len() {
        return Err(ConvertError::Format(format!(
            "model.bin has {} bytes after its last alias; the file is not a CTranslate2 model \
             or is damaged",
            bytes.len() - r.at
        )));
    }
    Ok(Model {
        spec,
        revision,
        variables,
    })
}

/// Writes a `model.bin` (for tests): variables in the given order, then aliases.
#[cfg(test)]
pub fn write(
    spec: &str,
    variables: &[(&str, Vec<usize>, u8, Vec<u8>)],
    aliases: &[(&str, &str)],
) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16 + 1).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&BINARY_VERSION.to_le_bytes());
    string(&mut out, spec);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(variables.len() as u32).to_le_bytes());
    for (name, shape, dtype, data) in variables {
        string(&mut out, name);
        out.push(shape.len() as u8);
        for d in shape {
            out.extend_from_slice(&(*d as u32).to_le_bytes());
        }
        out.push(*dtype);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
    for (alias, target) in aliases {
        string(&mut out, alias);
        string(&mut out, target);
    }
    out
}
