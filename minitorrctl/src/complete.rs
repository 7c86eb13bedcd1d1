//! Dynamic completion of group and file names, from the daemon.
//!
//! `minitorrctl [--socket PATH] __complete groups` prints the groups the tracker lists, and
//! `__complete files GROUP` the files of GROUP, one per line. The shell completion scripts
//! (clap_complete's static scripts, wrapped by [`wrap_script`]) call it while the user presses
//! Tab. It must be fast and quiet: any failure (no daemon, not logged in, tracker down, no
//! such group) prints nothing and exits 0, and the whole query gives up after
//! [`QUERY_TIMEOUT`]. It is not a clap subcommand, so it never shows in help, man pages or
//! the static completions.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use proto::control::{Request, Response};

use crate::cli::Shell;
use crate::client::Client;

/// The argument that turns minitorrctl into a completion helper.
pub const MARKER: &str = "__complete";

/// Longest a Tab press waits for the daemon.
pub const QUERY_TIMEOUT: Duration = Duration::from_millis(1500);

/// What is asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Query {
    Groups,
    Files(String),
}

/// `Some((socket, query))` when `args` (program name first) are a completion query. Only
/// `--socket PATH` / `--socket=PATH` may come before the marker.
pub fn parse(args: &[OsString]) -> Option<(Option<PathBuf>, Option<Query>)> {
    let mut socket = None;
    let mut rest = args.iter().skip(1);
    loop {
        let a = rest.next()?;
        if a == "--socket" {
            socket = Some(PathBuf::from(rest.next()?));
        } else if let Some(p) = a.to_str().and_then(|s| s.strip_prefix("--socket=")) {
            socket = Some(PathBuf::from(p));
        } else if a == MARKER {
            break;
        } else {
            return None;
        }
    }
    let what: Vec<String> = rest.filter_map(|a| a.to_str().map(String::from)).collect();
    let query = match what.as_slice() {
        [w] if w == "groups" => Some(Query::Groups),
        [w, group] if w == "files" => Some(Query::Files(group.clone())),
        _ => None,
    };
    Some((socket, query))
}

/// The candidates, one per line; empty on any failure.
pub fn answer(socket: PathBuf, query: Option<Query>) -> String {
    let Some(query) = query else {
        return String::new();
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return String::new();
    };
    let client = Client::new(socket);
    let request = match &query {
        Query::Groups => Request::ListGroups,
        Query::Files(group) => Request::ListFiles {
            group: group.clone(),
        },
    };
    let response =
        rt.block_on(async { tokio::time::timeout(QUERY_TIMEOUT, client.request(request)).await });
    let names: Vec<String> = match response {
        Ok(Ok(Response::Groups(groups))) => groups.into_iter().map(|g| g.name).collect(),
        Ok(Ok(Response::Files { files, .. })) => files.into_iter().map(|f| f.name).collect(),
        _ => vec![],
    };
    names
        .into_iter()
        // Names are validated by the tracker; still, nothing that could break a line-based
        // protocol or reach the terminal as a control character.
        .filter(|n| !n.chars().any(char::is_control))
        .map(|n| n + "\n")
        .collect()
}

/// Which positional argument of each command is a group, and which a file of that group,
/// read from the clap definition (the `group_id` and `file_name` arguments), so commands added
/// later complete too. `create_group` names a group that does not exist yet: left out.
pub fn name_positions(cli: &clap::Command) -> Vec<(String, usize, Option<usize>)> {
    let mut out = vec![];
    for sub in cli.get_subcommands() {
        if sub.get_name() == "create_group" || sub.is_hide_set() {
            continue;
        }
        let positionals: Vec<&str> = sub.get_positionals().map(|a| a.get_id().as_str()).collect();
        let group = positionals.iter().position(|id| *id == "group_id");
        let file = positionals.iter().position(|id| *id == "file_name");
        if let Some(g) = group {
            out.push((sub.get_name().to_string(), g + 1, file.map(|f| f + 1)));
        }
    }
    out
}

/// Long options (any command) that take a value: their value is not a positional argument.
fn value_options(cli: &clap::Command) -> String {
    let mut names = std::collections::BTreeSet::new();
    for cmd in std::iter::once(cli).chain(cli.get_subcommands()) {
        for a in cmd.get_arguments() {
            let takes = a.get_action().takes_values();
            if let (Some(long), true) = (a.get_long(), takes) {
                names.insert(format!("--{long}"));
            }
        }
    }
    names.remove("--socket");
    names.into_iter().collect::<Vec<_>>().join("|")
}

/// clap_complete's script for `shell` with group and file names completed from the daemon.
pub fn wrap_script(shell: Shell, script: &str, cli: &clap::Command) -> String {
    let positions = name_positions(cli);
    let skip = value_options(cli);
    match shell {
        Shell::Bash => wrap_bash(script, &positions, &skip),
        Shell::Zsh => wrap_zsh(script, &positions, &skip),
        Shell::Fish => wrap_fish(script, &positions, &skip),
    }
}

fn wrap_bash(script: &str, positions: &[(String, usize, Option<usize>)], skip: &str) -> String {
    let mut cases = String::new();
    for (cmd, g, f) in positions {
        let alias = cmd.replace('_', "-");
        let f = f.map_or(0, |f| f);
        cases.push_str(&format!("        {cmd}|{alias}) gpos={g}; fpos={f} ;;\n"));
    }
    // The static function keeps its job for everything else (commands, options, paths).
    let renamed = script.replacen("_minitorrctl() {", "_minitorrctl_static() {", 1);
    let (body, tail) = match renamed.rfind("if [[ \"${BASH_VERSINFO[0]}\"") {
        Some(i) => renamed.split_at(i),
        None => (renamed.as_str(), ""),
    };
    format!(
        r#"{body}# Group and file names come from the daemon (`minitorrctl __complete`; quiet, and empty
# when minitorrd is not running or not logged in).
_minitorrctl() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" sub="" pos=0 i w socket=() words=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        case "$w" in
            --socket) socket=(--socket "${{COMP_WORDS[i+1]}}"); ((i++)) ;;
            --socket=*) socket=("$w") ;;
            {skip}) ((i++)) ;;
            -*) ;;
            *) if [[ -z "$sub" ]]; then sub="$w"; else words+=("$w"); ((pos++)); fi ;;
        esac
    done
    local gpos=0 fpos=0
    case "$sub" in
{cases}    esac
    if [[ -n "$sub" && "$cur" != -* ]]; then
        local what=()
        if ((gpos > 0 && pos + 1 == gpos)); then
            what=(groups)
        elif ((fpos > 0 && pos + 1 == fpos && gpos > 0)); then
            what=(files "${{words[gpos-1]}}")
        fi
        if ((${{#what[@]}})); then
            COMPREPLY=()
            local name
            while IFS= read -r name; do
                [[ "$name" == "$cur"* ]] && COMPREPLY+=("$(printf '%q' "$name")")
            done < <("${{COMP_WORDS[0]}}" "${{socket[@]}}" {MARKER} "${{what[@]}}" 2>/dev/null)
            return 0
        fi
    fi
    _minitorrctl_static "$@"
}}

{tail}"#
    )
}

fn wrap_zsh(script: &str, positions: &[(String, usize, Option<usize>)], skip: &str) -> String {
    let mut cases = String::new();
    for (cmd, g, f) in positions {
        let alias = cmd.replace('_', "-");
        let f = f.map_or(0, |f| f);
        cases.push_str(&format!("        ({cmd}|{alias}) gpos={g}; fpos={f} ;;\n"));
    }
    let renamed = script.replacen("_minitorrctl() {", "_minitorrctl_static() {", 1);
    // zsh's generated script ends by calling `_minitorrctl "$@"` when autoloaded; keep that
    // call pointing at our wrapper, defined before it.
    let (body, tail) = match renamed.rfind("if [ \"$funcstack[1]\" = \"_minitorrctl\" ]") {
        Some(i) => renamed.split_at(i),
        None => (renamed.as_str(), ""),
    };
    format!(
        r#"{body}# Group and file names come from the daemon (`minitorrctl __complete`; quiet, and empty
# when minitorrd is not running or not logged in).
_minitorrctl() {{
    local sub="" pos=0 i w gpos=0 fpos=0
    local -a socket args
    for ((i = 2; i < CURRENT; i++)); do
        w="${{words[i]}}"
        case "$w" in
            (--socket) socket=(--socket "${{words[i+1]}}"); ((i++)) ;;
            (--socket=*) socket=("$w") ;;
            ({skip}) ((i++)) ;;
            (-*) ;;
            (*) if [[ -z "$sub" ]]; then sub="$w"; else args+=("$w"); ((pos++)); fi ;;
        esac
    done
    case "$sub" in
{cases}    esac
    if [[ -n "$sub" && "${{words[CURRENT]}}" != -* ]]; then
        local -a what names
        if ((gpos > 0 && pos + 1 == gpos)); then
            what=(groups)
        elif ((fpos > 0 && pos + 1 == fpos)); then
            what=(files "${{args[gpos]}}")
        fi
        if ((${{#what}})); then
            names=(${{(f)"$("${{words[1]}}" "${{socket[@]}}" {MARKER} "${{what[@]}}" 2>/dev/null)"}})
            compadd -a names
            return
        fi
    fi
    _minitorrctl_static "$@"
}}

{tail}"#
    )
}

fn wrap_fish(script: &str, positions: &[(String, usize, Option<usize>)], skip: &str) -> String {
    let mut out = script.to_string();
    let start = out.len();
    out.push_str(
        "\n# Group and file names come from the daemon (`minitorrctl __complete`; quiet, and empty\n\
         # when minitorrd is not running or not logged in).\n\
         function __minitorrctl_positionals\n\
         \x20   set -l tokens (commandline -opc)\n\
         \x20   set -l out\n\
         \x20   set -l skip 0\n\
         \x20   for t in $tokens[2..-1]\n\
         \x20       if test $skip = 1\n\
         \x20           set skip 0\n\
         \x20           continue\n\
         \x20       end\n\
         \x20       switch $t\n\
         \x20           case --socket\n\
         \x20               set skip 1\n\
         \x20           case '-*'\n\
         \x20           case '*'\n\
         \x20               set -a out $t\n\
         \x20       end\n\
         \x20   end\n\
         \x20   printf '%s\\n' $out\n\
         end\n\
         function __minitorrctl_socket\n\
         \x20   set -l tokens (commandline -opc)\n\
         \x20   if set -l i (contains -i -- --socket $tokens)\n\
         \x20       printf '%s\\n' --socket $tokens[(math $i + 1)]\n\
         \x20   end\n\
         end\n\
         function __minitorrctl_wants --argument-names cmd n\n\
         \x20   set -l p (__minitorrctl_positionals)\n\
         \x20   test (count $p) -ge 1; and test \"$p[1]\" = $cmd; and test (count $p) -eq $n\n\
         end\n",
    );
    // Options whose value is not a positional argument.
    let skip_case = format!("case --socket {}\n", skip.replace('|', " "));
    out = format!(
        "{}{}",
        &out[..start],
        out[start..].replacen("case --socket\n", &skip_case, 1)
    );
    for (cmd, g, f) in positions {
        // `complete -c minitorrctl -n COND -f -a (…)`: candidates only in that position.
        out.push_str(&format!(
            "complete -c minitorrctl -n '__minitorrctl_wants {cmd} {g}' -f -a '(minitorrctl (__minitorrctl_socket) {MARKER} groups 2>/dev/null)'\n"
        ));
        if let Some(f) = f {
            out.push_str(&format!(
                "complete -c minitorrctl -n '__minitorrctl_wants {cmd} {f}' -f -a '(minitorrctl (__minitorrctl_socket) {MARKER} files (__minitorrctl_positionals)[{gi}] 2>/dev/null)'\n",
                gi = g + 1
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_the_marker_after_socket_options_is_a_query() {
        assert_eq!(
            parse(&args(&["m", "__complete", "groups"])),
            Some((None, Some(Query::Groups)))
        );
        assert_eq!(
            parse(&args(&["m", "--socket", "/s", "__complete", "files", "g1"])),
            Some((Some("/s".into()), Some(Query::Files("g1".into()))))
        );
        assert_eq!(
            parse(&args(&["m", "--socket=/s", "__complete", "bogus"])),
            Some((Some("/s".into()), None))
        );
        assert_eq!(parse(&args(&["m", "list_groups"])), None);
        assert_eq!(parse(&args(&["m", "download_file", "__complete"])), None);
        assert_eq!(parse(&args(&["m"])), None);
    }

    #[test]
    fn a_missing_daemon_answers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            answer(dir.path().join("none.sock"), Some(Query::Groups)),
            ""
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn group_and_file_positions_come_from_the_definition() {
        let p = name_positions(&crate::cli::Cli::definition());
        let find = |c: &str| p.iter().find(|(n, _, _)| n == c).map(|(_, g, f)| (*g, *f));
        assert_eq!(find("download_file"), Some((1, Some(2))));
        assert_eq!(find("upload_file"), Some((2, None)));
        assert_eq!(find("join_group"), Some((1, None)));
        assert_eq!(find("accept_request"), Some((1, None)));
        assert_eq!(find("create_group"), None);
    }
}
