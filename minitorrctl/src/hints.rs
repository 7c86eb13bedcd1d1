//! Hints for the usual mistakes, composed in one place so each error says its hint once:
//! swapped arguments (`download_file big.bin team dl`), a `login` while already logged in
//! (asked before any password prompt), and daemon messages that already say what to do.

use std::ffi::{OsStr, OsString};
use std::time::Duration;

use proto::control::{Request, Response};
use proto::types::Membership;

use crate::cli::{Cli, Command};
use crate::client::Client;
use crate::exit::{Failure, Status};
use crate::render::human::shell_word;

/// Every command that takes a group names its argument like this (`GROUP_ID`); the swap check
/// finds them, and the commands added later, by it.
const GROUP_ARG: &str = "group_id";

/// The look-up behind a hint is a courtesy: it must never make a failure slow.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Does the daemon's (or tracker's) message already tell the user what to run? Then the CLI
/// adds no hint of its own, so no line reads "…; run: minitorrctl login …; log in first: …".
pub fn already_instructs(message: &str) -> bool {
    message.contains("minitorrctl ")
}

/// Error kinds a swapped group argument can cause: the group is unknown (`not_found`), the
/// user is not in it (`refused`), or the other argument did not fit (`invalid_input`, e.g. a
/// path that does not exist because it was the group's name).
fn may_be_swapped(f: &Failure) -> bool {
    f.status == Status::Refused && matches!(f.kind, "not_found" | "refused" | "invalid_input")
}

/// After a refusal: when the group given is not one the user is in but another argument is,
/// replace the hint with the command line that has the two swapped.
pub fn after_failure(f: Failure, args: &[OsString], socket: &std::path::Path) -> Failure {
    if !may_be_swapped(&f) || group_and_others(args).is_none() {
        return f;
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return f;
    };
    let client = Client::new(socket);
    let answer = rt.block_on(async {
        tokio::time::timeout(LOOKUP_TIMEOUT, client.request(Request::ListGroups)).await
    });
    let Ok(Ok(Response::Groups(groups))) = answer else {
        return f;
    };
    let mine: Vec<String> = groups
        .into_iter()
        .filter(|g| matches!(g.membership, Membership::Member | Membership::Owner))
        .map(|g| g.name)
        .collect();
    match swapped_group(args, &mine) {
        Some(suggestion) => f.with_hint(suggestion),
        None => f,
    }
}

/// The group a command line names (normalized) and the raw values of its other positionals.
fn group_and_others(args: &[OsString]) -> Option<(String, Vec<OsString>)> {
    let matches = Cli::definition().try_get_matches_from(args).ok()?;
    let (name, sub) = matches.subcommand()?;
    let def = Cli::definition();
    let def = def.find_subcommand(name)?;
    let group = sub.try_get_one::<String>(GROUP_ARG).ok()??.clone();
    let others = def
        .get_positionals()
        .filter(|a| a.get_id() != GROUP_ARG)
        .filter_map(|a| sub.try_get_raw(a.get_id().as_str()).ok()?)
        .filter_map(|mut v| v.next().map(OsStr::to_os_string))
        .collect();
    Some((group, others))
}

/// Pure core of [`after_failure`]: `mine` are the groups the user is a member or owner of.
pub fn swapped_group(args: &[OsString], mine: &[String]) -> Option<String> {
    let (group, others) = group_and_others(args)?;
    let is_mine = |name: &str| mine.iter().any(|g| g == name);
    if is_mine(&group) {
        return None;
    }
    let other = others.into_iter().find(|v| {
        v.to_str()
            .and_then(|s| proto::names::group(s).ok())
            .is_some_and(|g| is_mine(&g))
    })?;
    // Swap the two words where the user typed them, keeping every flag in its place. The
    // group was typed after the command name; find it as typed (before normalization).
    let start = 1
        + args
            .iter()
            .skip(1)
            .position(|a| Cli::definition().find_subcommand(a).is_some())?
        + 1;
    let typed_group = args[start..].iter().position(|a| {
        a.to_str()
            .and_then(|s| proto::names::group(s).ok())
            .is_some_and(|g| g == group)
    })? + start;
    let typed_other = args[start..].iter().position(|a| *a == other)? + start;
    let mut fixed = args.to_vec();
    fixed.swap(typed_group, typed_other);
    let words: Vec<String> = fixed[1..]
        .iter()
        .map(|a| shell_word(&a.to_string_lossy()))
        .collect();
    Some(format!("did you mean: minitorrctl {}?", words.join(" ")))
}

/// Before a password prompt: is the daemon there at all, and (for `login`) is someone logged
/// in already? Nobody should type a password to learn either.
pub async fn before_password(command: &Command, client: &Client) -> Result<(), Failure> {
    let Command::Login { user_id, .. } = command else {
        return client.probe().await;
    };
    let status = match client.request(Request::Status).await? {
        Response::Status(s) => s,
        // An old or odd daemon: let the login itself tell.
        _ => return Ok(()),
    };
    match status.user {
        Some(current) if &current == user_id => Err(Failure::new(
            Status::Refused,
            "refused",
            format!("already logged in as {current}"),
        )),
        Some(current) => Err(Failure::new(
            Status::Refused,
            "refused",
            format!("logged in as {current}"),
        )
        .with_hint("log out first: minitorrctl logout")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        std::iter::once("minitorrctl")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn mine() -> Vec<String> {
        vec!["team".into(), "other".into()]
    }

    #[test]
    fn swapped_group_and_file_is_caught_keeping_flags() {
        assert_eq!(
            swapped_group(&args(&["download_file", "big.bin", "team", "dl"]), &mine()).as_deref(),
            Some("did you mean: minitorrctl download_file team big.bin dl?")
        );
        assert_eq!(
            swapped_group(
                &args(&["--json", "download-file", "big.bin", "team", "dl", "--wait"]),
                &mine()
            )
            .as_deref(),
            Some("did you mean: minitorrctl --json download-file team big.bin dl --wait?")
        );
    }

    #[test]
    fn every_command_with_a_group_and_another_name_is_covered() {
        for (typed, meant) in [
            ("accept_request bob team", "accept_request team bob"),
            ("reject_request bob team", "reject_request team bob"),
            ("remove_member bob team", "remove_member team bob"),
            ("stop_share a.iso team", "stop_share team a.iso"),
            ("remove_file a.iso team", "remove_file team a.iso"),
            ("wait a.iso team", "wait team a.iso"),
            ("upload_file team big.bin", "upload_file big.bin team"),
        ] {
            let words: Vec<&str> = typed.split(' ').collect();
            assert_eq!(
                swapped_group(&args(&words), &mine()),
                Some(format!("did you mean: minitorrctl {meant}?")),
                "{typed}"
            );
        }
    }

    #[test]
    fn no_suggestion_when_it_would_not_help() {
        // The group is one of mine: the error is about something else.
        assert_eq!(
            swapped_group(&args(&["download_file", "team", "other", "dl"]), &mine()),
            None
        );
        // Neither is mine.
        assert_eq!(
            swapped_group(&args(&["accept_request", "bob", "eve"]), &mine()),
            None
        );
        // No second name.
        assert_eq!(swapped_group(&args(&["list_files", "nope"]), &mine()), None);
        assert_eq!(swapped_group(&args(&["status"]), &mine()), None);
    }

    #[test]
    fn odd_words_are_quoted_in_the_suggestion() {
        assert_eq!(
            swapped_group(
                &args(&["download_file", "my file", "team", "/tmp/x y"]),
                &mine()
            ),
            None,
            "'my file' is not a valid group name, clap refuses it before any daemon"
        );
        assert_eq!(
            swapped_group(
                &args(&["download_file", "a.iso", "team", "/tmp/x y"]),
                &mine()
            )
            .as_deref(),
            Some("did you mean: minitorrctl download_file team a.iso '/tmp/x y'?")
        );
    }

    #[test]
    fn messages_with_instructions_are_recognized() {
        assert!(already_instructs(
            "not logged in; run: minitorrctl login <user_id>"
        ));
        assert!(!already_instructs("not logged in"));
    }
}
