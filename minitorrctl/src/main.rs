//! `minitorrctl`: send one command to the user's minitorrd and exit with a status scripts can
//! trust (0 ok, 1 refused, 2 usage, 3 daemon unreachable). See docs/cli.md.

extern crate minitorr_proto as proto;

mod cli;
mod client;
mod commands;
mod exit;
mod generate;
mod password;
mod progress;
mod render;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::client::Client;
use crate::commands::Plan;
use crate::exit::{Failure, Status};
use crate::render::{json, Style};

fn main() -> ExitCode {
    // `MINITORR_SOCKET=` (set but empty) means "not set", as for most path variables; clap
    // would reject it as a missing value. Still single-threaded here, so this is sound.
    if std::env::var_os(proto::defaults::SOCKET_ENV).is_some_and(|v| v.is_empty()) {
        std::env::remove_var(proto::defaults::SOCKET_ENV);
    }
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e, wants_json(&args)),
    };
    let json = cli.json;
    match run(cli) {
        Ok(stdout) => {
            print_stdout(&stdout);
            ExitCode::from(Status::Success.code())
        }
        Err(f) => report(&f, json),
    }
}

fn run(cli: Cli) -> Result<String, Failure> {
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::usage(format!("cannot determine the current directory: {e}")))?;
    // One request at a time: a single-threaded runtime is all this needs.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Status::Refused, "internal", format!("cannot start: {e}")))?;
    // Don't make people type a password only to learn that minitorrd is not running.
    if cli.command.prompts_for_password() {
        rt.block_on(Client::new(cli.socket_path()).probe())?;
    }
    match commands::plan(cli.command.clone(), &cwd, &mut password::Interactive)? {
        Plan::Completions(shell) => {
            let mut out = Vec::new();
            generate::completions(shell, &mut out);
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        Plan::Man(dir) => {
            // anyhow stops here: the chain becomes the one-line message.
            generate::man_pages(&dir)
                .map_err(|e| Failure::new(Status::Refused, "io", format!("{e:#}")))?;
            Ok(String::new())
        }
        plan => rt.block_on(commands::run(&cli, plan)),
    }
}

/// The one-line error on stderr, the JSON document on stdout with `--json`, and the status.
fn report(f: &Failure, json: bool) -> ExitCode {
    if json {
        print_stdout(&json::render_error(f));
    }
    let style = Style::for_stderr();
    let _ = writeln!(
        std::io::stderr(),
        "minitorrctl: {}",
        style.red(&render::human::clean(&f.line()))
    );
    ExitCode::from(f.status.code())
}

/// clap's own errors keep clap's wording and its exit status 2; `--help` and `--version` are
/// successes. With `--json` the failure is also a JSON document, so stdout is never empty.
fn usage_error(e: clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if json {
        let first_line = e
            .kind()
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| "invalid usage".into());
        let msg = proto::names::escape_for_display(&e.to_string());
        let message = msg
            .lines()
            .find_map(|l| l.strip_prefix("error: "))
            .map_or(first_line, str::to_owned);
        print_stdout(&json::render_error(&Failure::usage(message)));
    }
    // clap quotes the refused value; one carrying a bidi override or invisible characters
    // must not reach the terminal as is (it would reorder or hide the message around it).
    let text = e.to_string();
    let safe = proto::names::escape_for_display(&text);
    if safe == text {
        let _ = e.print();
    } else {
        eprint!("{safe}");
    }
    ExitCode::from(e.exit_code() as u8)
}

/// `--json` before a `--` counts even when the rest of the line did not parse.
fn wants_json(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// A closed pipe (`minitorrctl list_files g1 | head -1`) is not an error worth a panic.
fn print_stdout(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
}
