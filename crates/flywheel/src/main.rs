//! The `flywheel` binary: CLI parsing and process wiring. The domain lives in the library crates.

mod admin_key;
mod backup;
mod batch_config;
mod clustered;
mod config;
mod convert;
mod deployments;
mod files_config;
mod fine_tuning_config;
mod finetune;
mod http;
mod hub_config;
mod pull;
mod push;
mod rotate;
mod routing;
mod serve;
mod telemetry;

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
    /// Seal every MCP server's secrets under a new secret key, and put that key in place.
    RotateSecretKey(rotate::RotateArgs),
    /// Write one archive of a data directory (database, hub blobs, keys) while it is served.
    Backup(backup::BackupArgs),
    /// Restore an archive written by `backup` into a new data directory, checked part by part.
    Restore(backup::RestoreArgs),
    /// Convert a Hugging Face BERT-family model directory (safetensors) into a GGUF file.
    Convert(convert::ConvertArgs),
    /// Train a LoRA adapter for a llama GGUF on a chat JSONL file, on this machine's CPUs.
    Finetune(Box<finetune::FinetuneArgs>),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve_command(*args),
        command => telemetry::init(None).and_then(|_| run_client(command)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `flywheel serve`: logs and traces as configured, then the server.
fn serve_command(args: config::ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let telemetry = telemetry::init(config.otlp_endpoint.as_deref())?;
    let served = serve::run(config);
    telemetry.shutdown();
    served
}

/// The commands other than `serve`, with logs on stderr.
fn run_client(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve_command(*args),
        Command::Push(args) => client_runtime().and_then(|rt| rt.block_on(push::run(args))),
        Command::Pull(args) => client_runtime().and_then(|rt| rt.block_on(pull::run(args))),
        Command::RotateSecretKey(args) => {
            client_runtime().and_then(|rt| rt.block_on(rotate::run(args)))
        }
        Command::Backup(args) => client_runtime().and_then(|rt| rt.block_on(backup::backup(args))),
        Command::Restore(args) => {
            client_runtime().and_then(|rt| rt.block_on(backup::restore(args)))
        }
        Command::Convert(args) => convert::run(args),
        Command::Finetune(args) => finetune::run(*args),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::CommandFactory;

    use super::Cli;

    /// `--flag` → its environment variable, from the README's `flywheel serve` table
    /// (rows like ``| `--listen ADDR` | `FLYWHEEL_LISTEN` | … |``).
    fn readme_flags() -> BTreeMap<String, Option<String>> {
        let readme = include_str!("../../../README.md");
        readme
            .lines()
            .filter(|line| line.starts_with("| `--"))
            .filter_map(|line| {
                let mut cells = line.split('|').map(str::trim).skip(1);
                let flag = cells.next()?.trim_matches('`');
                let flag = flag.split_whitespace().next()?.trim_start_matches("--");
                let env = cells
                    .next()?
                    .split('`')
                    .nth(1)
                    .map(str::to_owned)
                    .filter(|e| e.starts_with("FLYWHEEL_"));
                Some((flag.to_owned(), env))
            })
            .collect()
    }

    /// `--flag` → its environment variable, from `flywheel serve`'s clap definition (hidden
    /// flags left out).
    fn serve_flags() -> BTreeMap<String, Option<String>> {
        let cli = Cli::command();
        let serve = cli
            .get_subcommands()
            .find(|c| c.get_name() == "serve")
            .expect("a serve subcommand");
        serve
            .get_arguments()
            .filter_map(|arg| {
                let long = arg.get_long()?;
                // Hidden flags are for tests only and stay out of the README.
                (long != "help" && !arg.is_hide_set()).then(|| {
                    let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                    (long.to_owned(), env)
                })
            })
            .collect()
    }

    #[test]
    fn the_readme_flag_table_matches_serve_flags() {
        let documented = readme_flags();
        let defined = serve_flags();
        assert!(
            documented.len() > 20,
            "the README's flag table was not found"
        );
        let undocumented: Vec<_> = defined
            .keys()
            .filter(|f| !documented.contains_key(*f))
            .collect();
        let unknown: Vec<_> = documented
            .keys()
            .filter(|f| !defined.contains_key(*f))
            .collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "README.md's serve flag table is out of date: missing rows for {undocumented:?}, \
             rows for flags that do not exist: {unknown:?}"
        );
        for (flag, env) in &defined {
            assert_eq!(
                &documented[flag], env,
                "README.md documents --{flag} with another environment variable"
            );
        }
    }
}
