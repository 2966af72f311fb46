//! A small, bounded reader of GGUF header metadata (no tensors), for sizing replicas.
//!
//! Hand-written rather than a dependency: the placer reads untrusted files (pushed to the hub
//! by anyone with `hub:write`) before any engine loads them, possibly in a control plane that
//! does not link llama.cpp at all. `llama-cpp-2`'s `GgufContext` is llama.cpp's C parser (its
//! typed getters abort the process on a type mismatch), and the pure-Rust crates on crates.io
//! decode whole files with allocations sized by the file's own length fields. This reader
//! allocates only for keys and short string values, each capped, skips everything else by
//! reading through it, stops after [`MAX_HEADER_BYTES`], and is fuzzed with random bytes.
//!
//! Format (GGUF v2/v3, little-endian): magic `GGUF`, version u32, tensor count u64, KV count
//! u64, then per KV: key (u64 length + UTF-8), value type u32, value. Strings are u64 length +
//! bytes; arrays are element type u32 + count u64 + elements.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;

/// Bytes of header the reader will consume at most (tokenizer vocabularies live here too).
pub const MAX_HEADER_BYTES: u64 = 256 << 20;
const MAX_KEY_BYTES: u64 = 64 << 10;
/// String values longer than this are skipped (chat templates, licences), not kept.
const MAX_KEPT_STRING: u64 = 4 << 10;
const MAX_KV_COUNT: u64 = 1 << 20;
const MAX_KEPT_VALUES: usize = 4096;
const MAX_ARRAY_DEPTH: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("not a GGUF file: {0}")]
    Format(String),
    #[error(
        "GGUF metadata lacks `{0}`, needed to size the KV cache; is this a text-generation model?"
    )]
    Missing(String),
}

/// A scalar or short string value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i128),
    Float(f64),
    Bool(bool),
    Str(String),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The header's scalars and short strings, and the lengths of its arrays.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    pub version: u32,
    pub tensor_count: u64,
    pub values: BTreeMap<String, Value>,
    pub array_lengths: BTreeMap<String, u64>,
}

impl Metadata {
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.values.get(key).and_then(Value::as_u64)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.values.get(key).and_then(Value::as_str)
    }

    /// Read the metadata of the GGUF file at `path`.
    pub fn read_file(path: &Path) -> Result<Self, GgufError> {
        let file = std::fs::File::open(path).map_err(|source| GgufError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::read(io::BufReader::new(file)).map_err(|e| match e {
            GgufError::Io { source, .. } => GgufError::Io {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// Read metadata from the start of a GGUF stream; consumes at most [`MAX_HEADER_BYTES`].
    pub fn read(reader: impl Read) -> Result<Self, GgufError> {
        let mut r = Reader {
            inner: reader.take(MAX_HEADER_BYTES),
        };
        let magic = r.bytes::<4>()?;
        if &magic != b"GGUF" {
            return Err(GgufError::Format(format!(
                "the file starts with {magic:02x?}, not the GGUF magic"
            )));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Format(format!(
                "GGUF version {version} is not supported (2 and 3 are); convert the model with a current llama.cpp"
            )));
        }
        let tensor_count = r.u64()?;
        let kv_count = r.u64()?;
        if kv_count > MAX_KV_COUNT {
            return Err(GgufError::Format(format!(
                "{kv_count} metadata entries, more than the {MAX_KV_COUNT} any model has"
            )));
        }
        let mut meta = Metadata {
            version,
            tensor_count,
            ..Metadata::default()
        };
        for _ in 0..kv_count {
            let key = r.string(MAX_KEY_BYTES)?;
            let ty = r.u32()?;
            if ty == ARRAY {
                let (elem, len) = (r.u32()?, r.u64()?);
                r.skip_array(elem, len, 1)?;
                if meta.array_lengths.len() < MAX_KEPT_VALUES {
                    meta.array_lengths.insert(key, len);
                }
            } else if let Some(value) = r.value(ty)? {
                if meta.values.len() < MAX_KEPT_VALUES {
                    meta.values.insert(key, value);
                }
            }
        }
        Ok(meta)
    }
}

const STRING: u32 = 8;
const ARRAY: u32 = 9;

struct Reader<R> {
    inner: io::Take<R>,
}

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                GgufError::Format(format!(
                    "the header ends early (or exceeds {} MiB)",
                    MAX_HEADER_BYTES >> 20
                ))
            } else {
                GgufError::Io {
                    path: String::new(),
                    source: e,
                }
            }
        })?;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(|e| {
            GgufError::Io {
                path: String::new(),
                source: e,
            }
        })?;
        if copied < n {
            return Err(GgufError::Format(format!(
                "a value of {n} bytes runs past the end of the header (or its {} MiB limit)",
                MAX_HEADER_BYTES >> 20
            )));
        }
        Ok(())
    }

    /// A string of at most `max` bytes; longer ones are an error.
    fn string(&mut self, max: u64) -> Result<String, GgufError> {
        let len = self.u64()?;
        if len > max {
            return Err(GgufError::Format(format!(
                "a key of {len} bytes (at most {max} expected)"
            )));
        }
        let mut buf = Vec::new();
        (&mut self.inner)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(|e| GgufError::Io {
                path: String::new(),
                source: e,
            })?;
        if (buf.len() as u64) < len {
            return Err(GgufError::Format(
                "a string runs past the end of the header".into(),
            ));
        }
        String::from_utf8(buf).map_err(|_| GgufError::Format("a key is not UTF-8".into()))
    }

    fn fixed_size(ty: u32) -> Option<u64> {
        match ty {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        }
    }

    /// A scalar value (`None`: a string too long to keep, already skipped).
    fn value(&mut self, ty: u32) -> Result<Option<Value>, GgufError> {
        Ok(Some(match ty {
            0 => Value::Int(i128::from(self.bytes::<1>()?[0])),
            1 => Value::Int(i128::from(i8::from_le_bytes(self.bytes()?))),
            2 => Value::Int(i128::from(u16::from_le_bytes(self.bytes()?))),
            3 => Value::Int(i128::from(i16::from_le_bytes(self.bytes()?))),
            4 => Value::Int(i128::from(self.u32()?)),
            5 => Value::Int(i128::from(i32::from_le_bytes(self.bytes()?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.bytes()?))),
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            10 => Value::Int(i128::from(self.u64()?)),
            11 => Value::Int(i128::from(i64::from_le_bytes(self.bytes()?))),
            12 => Value::Float(f64::from_le_bytes(self.bytes()?)),
            STRING => {
                let len = self.u64()?;
                if len > MAX_KEPT_STRING {
                    self.skip(len)?;
                    return Ok(None);
                }
                let mut buf = Vec::new();
                (&mut self.inner)
                    .take(len)
                    .read_to_end(&mut buf)
                    .map_err(|e| GgufError::Io {
                        path: String::new(),
                        source: e,
                    })?;
                if (buf.len() as u64) < len {
                    return Err(GgufError::Format(
                        "a string runs past the end of the header".into(),
                    ));
                }
                Value::Str(String::from_utf8_lossy(&buf).into_owned())
            }
            other => {
                return Err(GgufError::Format(format!("unknown value type {other}")));
            }
        }))
    }

    fn skip_array(&mut self, elem: u32, len: u64, depth: u8) -> Result<(), GgufError> {
        if let Some(size) = Self::fixed_size(elem) {
            return self.skip(len.saturating_mul(size));
        }
        match elem {
            STRING => {
                for _ in 0..len {
                    let n = self.u64()?;
                    self.skip(n)?;
                }
                Ok(())
            }
            ARRAY if depth < MAX_ARRAY_DEPTH => {
                for _ in 0..len {
                    let (e, n) = (self.u32()?, self.u64()?);
                    self.skip_array(e, n, depth + 1)?;
                }
                Ok(())
            }
            ARRAY => Err(GgufError::Format(format!(
                "arrays nested deeper than {MAX_ARRAY_DEPTH}"
            ))),
            other => Err(GgufError::Format(format!(
                "unknown array element type {other}"
            ))),
        }
    }
}

#[cfg(test)]
#[path = "gguf_tests.rs"]
mod tests;
