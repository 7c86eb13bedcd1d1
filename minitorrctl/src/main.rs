//! `minitorrctl`: send one command to the user's minitorrd and exit with a status scripts can
//! trust (0 ok, 1 refused, 2 usage, 3 daemon unreachable). See docs/cli.md.

extern crate minitorr_proto as proto;

mod cli;
mod client;
mod commands;
mod complete;
mod exit;
mod generate;
mod hints;
mod password;
mod progress;
mod render;
mod watch;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use crate::cli::Cli;
use crate::client::Client;
use crate::commands::Plan;
use crate::exit::{Failure, Status};
use crate::render::{json, Style};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // Tab completion asking for group or file names: quiet, never an error.
    if let Some((socket, query)) = complete::parse(&args) {
        let socket = socket.unwrap_or_else(Cli::socket_path_from_env);
        print_stdout(&complete::answer(socket, query));
        return ExitCode::SUCCESS;
    }
    let cli = match Cli::parse_from_args(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e, wants_json(&args)),
    };
    let json = cli.json;
    let socket = cli.socket_path();
    match run(cli) {
        Ok(stdout) => {
            print_stdout(&stdout);
            ExitCode::from(Status::Success.code())
        }
        Err(f) => report(&hints::after_failure(f, &args, &socket), json),
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
    // Don't make people type a password only to learn that minitorrd is not running, or that
    // they are logged in already.
    if cli.command.prompts_for_password() {
        let client = Client::new(cli.socket_path());
        rt.block_on(hints::before_password(&cli.command, &client))?;
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
        print_stdout(&json::render_error(&usage_failure(&e)));
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

/// clap's whole message as a one-line `message` (every paragraph of it: the missing argument
/// names, the "similar subcommand" tip) and its usage line as the `hint`.
fn usage_failure(e: &clap::Error) -> Failure {
    let text = proto::names::escape_for_display(&e.to_string());
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let (body, usage) = match text.find("\nUsage:") {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let one_line = |s: &str| {
        s.split("\n\n")
            .map(|para| {
                para.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut message = one_line(body);
    if message.is_empty() {
        message = e.kind().as_str().unwrap_or("invalid usage").to_owned();
    }
    let f = Failure::usage(message);
    match usage.map(one_line).filter(|u| !u.is_empty()) {
        Some(u) => f.with_hint(u),
        None => f,
    }
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
