//! The binary as a user starts it: version, and the errors a mistyped command line gets.
//!
//! Being an integration test, this also makes `cargo test` build the release binary with the
//! test run's features, so the end-to-end suite uses that build instead of a second one.

use std::process::{Command, Output};

fn flywheel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flywheel"))
        .args(args)
        .env_remove("FLYWHEEL_ADMIN_KEY")
        .output()
        .expect("the flywheel binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn prints_its_version() {
    let out = flywheel(&["--version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("flywheel {}", env!("CARGO_PKG_VERSION")),
        "--version prints the crate's version"
    );
}

#[test]
fn an_unknown_flag_is_named_and_exits_with_usage_status() {
    let out = flywheel(&["serve", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error status");
    let err = stderr(&out);
    assert!(err.contains("--no-such-flag"), "names the flag: {err}");
}

#[test]
fn a_bad_listen_address_is_refused_before_anything_starts() {
    let out = flywheel(&["serve", "--listen", "not-an-address"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("not-an-address"), "names the value: {err}");
}

#[test]
fn serve_help_lists_the_flags_the_readme_documents() {
    let out = flywheel(&["serve", "--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--listen", "--model", "--database-url", "--data-dir"] {
        assert!(help.contains(flag), "serve --help lists {flag}");
    }
}

#[test]
fn a_subcommand_missing_its_argument_says_which() {
    let out = flywheel(&["push"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.to_lowercase().contains("required"), "{err}");
}
