use super::*;

/// A minimal GGUF writer for tests.
#[derive(Default)]
pub(crate) struct Writer {
    kvs: Vec<u8>,
    count: u64,
}

impl Writer {
    fn key(&mut self, key: &str, ty: u32) {
        self.kvs.extend((key.len() as u64).to_le_bytes());
        self.kvs.extend(key.as_bytes());
        self.kvs.extend(ty.to_le_bytes());
        self.count += 1;
    }

    pub(crate) fn u32(mut self, key: &str, v: u32) -> Self {
        self.key(key, 4);
        self.kvs.extend(v.to_le_bytes());
        self
    }

    pub(crate) fn str(mut self, key: &str, v: &str) -> Self {
        self.key(key, STRING);
        self.kvs.extend((v.len() as u64).to_le_bytes());
        self.kvs.extend(v.as_bytes());
        self
    }

    pub(crate) fn strings(mut self, key: &str, items: &[&str]) -> Self {
        self.key(key, ARRAY);
        self.kvs.extend(STRING.to_le_bytes());
        self.kvs.extend((items.len() as u64).to_le_bytes());
        for s in items {
            self.kvs.extend((s.len() as u64).to_le_bytes());
            self.kvs.extend(s.as_bytes());
        }
        self
    }

    pub(crate) fn f32s(mut self, key: &str, items: &[f32]) -> Self {
        self.key(key, ARRAY);
        self.kvs.extend(6u32.to_le_bytes());
        self.kvs.extend((items.len() as u64).to_le_bytes());
        for v in items {
            self.kvs.extend(v.to_le_bytes());
        }
        self
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out.extend(self.count.to_le_bytes());
        out.extend(self.kvs);
        out
    }
}

#[test]
fn reads_scalars_strings_and_array_lengths() {
    let long = "x".repeat(10_000);
    let bytes = Writer::default()
        .str("general.architecture", "llama")
        .u32("llama.block_count", 30)
        .str("tokenizer.chat_template", &long)
        .strings("tokenizer.ggml.tokens", &["a", "b", "c"])
        .f32s("tokenizer.ggml.scores", &[0.0, 1.0, 2.0])
        .u32("llama.context_length", 8192)
        .finish();
    let m = Metadata::read(&bytes[..]).unwrap();
    assert_eq!(m.version, 3);
    assert_eq!(m.str("general.architecture"), Some("llama"));
    assert_eq!(m.u64("llama.block_count"), Some(30));
    assert_eq!(m.u64("llama.context_length"), Some(8192));
    assert_eq!(m.array_lengths.get("tokenizer.ggml.tokens"), Some(&3));
    assert!(
        !m.values.contains_key("tokenizer.chat_template"),
        "long strings are skipped, not kept"
    );
}

#[test]
fn refuses_what_is_not_gguf_with_a_reason() {
    let e = Metadata::read(&b"PK\x03\x04 a zip file"[..]).unwrap_err();
    assert!(e.to_string().contains("not the GGUF magic"), "{e}");
    let mut v1 = b"GGUF".to_vec();
    v1.extend(1u32.to_le_bytes());
    let e = Metadata::read(&v1[..]).unwrap_err();
    assert!(e.to_string().contains("version 1"), "{e}");
    let full = Writer::default().u32("a.b", 1).finish();
    let e = Metadata::read(&full[..full.len() - 2]).unwrap_err();
    assert!(e.to_string().contains("ends early"), "{e}");
}

#[test]
fn huge_declared_lengths_do_not_allocate() {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend(1u64.to_le_bytes());
    bytes.extend(u64::MAX.to_le_bytes()); // key length
    assert!(Metadata::read(&bytes[..]).is_err());

    let mut bytes = Writer::default().finish();
    bytes[16..24].copy_from_slice(&1u64.to_le_bytes());
    bytes.extend(1u64.to_le_bytes());
    bytes.extend(b"k");
    bytes.extend(ARRAY.to_le_bytes());
    bytes.extend(STRING.to_le_bytes());
    bytes.extend((u64::MAX / 2).to_le_bytes()); // an array of 2^63 strings
    assert!(Metadata::read(&bytes[..]).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Random bytes never panic.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = Metadata::read(&bytes[..]);
    }

    /// A valid header followed by random bytes (random types and lengths) never panics.
    #[test]
    fn random_entries_after_a_valid_header_never_panic(
        count in 0u64..64,
        tail in proptest::collection::vec(proptest::num::u8::ANY, 0..1024),
    ) {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend(count.to_le_bytes());
        bytes.extend(tail);
        let _ = Metadata::read(&bytes[..]);
    }

    /// Flipping any byte of a valid file never panics.
    #[test]
    fn corrupted_valid_files_never_panic(pos in 0usize..200, byte in proptest::num::u8::ANY) {
        let mut bytes = Writer::default()
            .str("general.architecture", "qwen2")
            .strings("tokenizer.ggml.tokens", &["a", "bb", "ccc"])
            .u32("qwen2.block_count", 24)
            .finish();
        let i = pos % bytes.len();
        bytes[i] = byte;
        let _ = Metadata::read(&bytes[..]);
    }
}
