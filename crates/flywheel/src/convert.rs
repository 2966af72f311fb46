//! `flywheel convert SRC -o OUT`: a Hugging Face BERT-family directory (safetensors and a
//! WordPiece tokenizer.json) to a GGUF llama.cpp loads, or a CTranslate2 Whisper directory
//! (`model.bin`) to a safetensors directory the speech engine loads, with a progress bar (a
//! plain log line per tenth when stderr is not a terminal).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// The model directory: config.json, model.safetensors, tokenizer.json (and, for
    /// sentence-transformers models, 1_Pooling/config.json); or a CTranslate2 Whisper
    /// directory (model.bin, config.json, tokenizer.json).
    pub src: PathBuf,
    /// The GGUF file to write (a directory for a Whisper model).
    #[arg(short, long)]
    pub output: PathBuf,
    /// How a BERT model's weight matrices are stored: `source` (as the checkpoint has them),
    /// `f32`, `f16`, `bf16` or `q8_0` (8-bit blocks: a quarter of F32's size, and the
    /// integer matrix kernels; cosine to F32's vectors stays above 0.999 on MiniLM).
    /// Position and token-type tables, biases and norms stay F32.
    #[arg(long, default_value = "source", value_parser = parse_outtype)]
    pub outtype: ::convert::OutType,
}

fn parse_outtype(text: &str) -> Result<::convert::OutType, String> {
    ::convert::OutType::parse(text).ok_or_else(|| {
        format!("'{text}' is not an output type; use source, f32, f16, bf16 or q8_0")
    })
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    if ::convert::is_ctranslate2(&args.src) {
        if args.outtype != ::convert::OutType::Source {
            anyhow::bail!(
                "--outtype {} applies to BERT models; a CTranslate2 Whisper model keeps its \
                 own types (leave --outtype out)",
                args.outtype.as_str()
            );
        }
        eprintln!(
            "converting the CTranslate2 Whisper model {} ...",
            args.src.display()
        );
        let s = ::convert::convert_whisper(&args.src, &args.output, &mut |_| {})
            .with_context(|| format!("converting {}", args.src.display()))?;
        eprintln!(
            "wrote {} ({} tensors, {} bytes of weights; {} encoder and {} decoder layers, \
             width {}, {} tokens); serve it with --model {}",
            args.output.display(),
            s.tensors,
            s.bytes,
            s.encoder_layers,
            s.decoder_layers,
            s.d_model,
            s.vocab_size,
            args.output.display()
        );
        return Ok(());
    }
    let bar = ProgressBar::new(0);
    let terminal = std::io::stderr().is_terminal();
    if terminal {
        let style = ProgressStyle::with_template(
            "converting [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut logged = 0;
    let summary = ::convert::convert_bert(&args.src, &args.output, args.outtype, &mut |p| {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
        bar.set_message(p.tensor.clone());
        let tenth = p.bytes_done * 10 / p.bytes_total.max(1);
        if !terminal && tenth > logged {
            logged = tenth;
            tracing::info!(
                tensors = p.tensors_done,
                of = p.tensors_total,
                bytes = p.bytes_done,
                total = p.bytes_total,
                "converting: {}%",
                tenth * 10
            );
        }
    })
    .with_context(|| format!("converting {}", args.src.display()))?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {} ({} tensors, {} bytes of weights as {}, {} tokens, {} pooling)",
        args.output.display(),
        summary.tensors,
        summary.bytes,
        args.outtype.as_str(),
        summary.vocab_size,
        summary.pooling
    );
    Ok(())
}
