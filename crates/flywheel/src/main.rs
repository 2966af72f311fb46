//! The `flywheel` binary: CLI parsing and process wiring. The domain lives in the library crates.

mod admin_key;
mod config;
mod deployments;
mod http;
mod hub_config;
mod pull;
mod push;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "flywheel", version, about = "A self-hostable AI model cloud")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve models through the OpenAI-compatible API.
    Serve(Box<config::ServeArgs>),
    /// Push a directory into a hub repository as a new revision.
    Push(push::PushArgs),
    /// Pull a repository from Hugging Face, ModelScope or another Flywheel into this one.
    Pull(pull::PullArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,llama-cpp-2=warn,llama_cpp_2=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args.resolve().and_then(serve::run),
        Command::Push(args) => client_runtime().and_then(|rt| rt.block_on(push::run(args))),
        Command::Pull(args) => client_runtime().and_then(|rt| rt.block_on(pull::run(args))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A small runtime for the client commands.
fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}
