# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_minitorrctl_global_optspecs
    string join \n socket= json h/help V/version
end

function __fish_minitorrctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_minitorrctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_minitorrctl_using_subcommand
    set -l cmd (__fish_minitorrctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "create_user" -d 'Register a new user with the tracker'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "login" -d 'Log in; files you shared before are shared again'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "logout" -d 'Log out and stop sharing all files until the next login'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "create_group" -d 'Create a group; you become its owner'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "join_group" -d 'Ask the owner of a group to let you in'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "leave_group" -d 'Leave a group (and stop sharing your files in it)'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "list_requests" -d 'List pending join requests of a group you own, one user per line'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "accept_request" -d 'Let a user into a group you own'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "reject_request" -d 'Turn down a user\'s request to join a group you own'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "remove_member" -d 'Remove a member from a group you own (their shares there are withdrawn and their open downloads from other members are cut)'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "list_groups" -d 'List all groups in the network and your relation to each'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "list_files" -d 'List the files shared in a group, or the files of one item (a shared directory tree)'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "upload_file" -d 'Share a local file with a group (it is hashed first, which takes a while for big files)'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "download_file" -d 'Start downloading a file of a group'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "show_downloads" -d 'Show downloads: [D] downloading, [C] complete, [F] failed, [P] paused, [Q] queued'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "stop_share" -d 'Stop sharing one of your files in a group'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "remove_file" -d 'Remove a file from a group you own, whoever shares it'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "cancel" -d 'Stop a download and forget it; its part file is deleted unless --keep'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "pause" -d 'Pause a running or queued download ([P] in show_downloads)'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "resume" -d 'Continue a paused (or failed) download from its part file'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "remove" -d 'Forget finished or failed entries in show_downloads'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "status" -d 'Show who is logged in, the tracker connection and counts'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "wait" -d 'Wait for a download that is already running to finish (for scripts)'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "completions" -d 'Print a shell completion script on stdout'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "man" -d 'Write man pages (minitorrctl.1 and one per command) into a directory'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "devices" -d 'List your devices: the daemons that log in by themselves after a restart'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "revoke_device" -d 'Revoke one of your devices: its sessions end and it no longer logs in by itself'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "list_shares" -d 'List what you share: per file its group, path, size, bytes uploaded, peers served, state'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "watch" -d 'Print minitorrd\'s events as they happen: progress, completion, failures, peers, shares'
complete -c minitorrctl -n "__fish_minitorrctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand create_user" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand create_user" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand create_user" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand create_user" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand login" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand login" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand login" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand login" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand logout" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand logout" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand logout" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand logout" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand create_group" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand create_group" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand create_group" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand create_group" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand join_group" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand join_group" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand join_group" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand join_group" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand leave_group" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand leave_group" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand leave_group" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand leave_group" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_requests" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_requests" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_requests" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_requests" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand accept_request" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand accept_request" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand accept_request" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand accept_request" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand reject_request" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand reject_request" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand reject_request" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand reject_request" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand remove_member" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand remove_member" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand remove_member" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand remove_member" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_groups" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_groups" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_groups" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_groups" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_files" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_files" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_files" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_files" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand upload_file" -l name -d 'Share it under this name instead of its own file name' -r
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand upload_file" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand upload_file" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand upload_file" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand upload_file" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand download_file" -l timeout -d 'With --wait: give up (exit 1) after this many seconds; the download goes on' -r
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand download_file" -l only -d 'Of a directory tree, fetch only the files matching GLOB (repeatable; `*` stays in one directory, `**` crosses them, a directory selects all under it); a later download_file of the same item adds the rest' -r
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand download_file" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand download_file" -l wait -d 'Stay until the download completes (exit 0) or fails (exit 1), showing progress'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand download_file" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand download_file" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand download_file" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand show_downloads" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand show_downloads" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand show_downloads" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand show_downloads" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand stop_share" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand stop_share" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand stop_share" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand stop_share" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand remove_file" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand remove_file" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand remove_file" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand remove_file" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand cancel" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand cancel" -l keep -d 'Keep the part file'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand cancel" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand cancel" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand cancel" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand pause" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand pause" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand pause" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand pause" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand resume" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand resume" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand resume" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand resume" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand remove" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand remove" -l failed -d 'Every failed entry'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand remove" -l complete -d 'Every complete entry'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand remove" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand remove" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand remove" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand status" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand status" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand status" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand wait" -l dest -d 'Which download, when the same file is downloaded to several places' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand wait" -l timeout -d 'Give up (exit 1) after this many seconds; the download goes on' -r
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand wait" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand wait" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand wait" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand wait" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand completions" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand completions" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand completions" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand completions" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand man" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand man" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand man" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand man" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand devices" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand devices" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand devices" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand devices" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand revoke_device" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand revoke_device" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand revoke_device" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand revoke_device" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_shares" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_shares" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_shares" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand list_shares" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand watch" -l socket -d 'Control socket of minitorrd [env: MINITORR_SOCKET] [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]' -r -F
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand watch" -l json -d 'Print exactly one JSON document on stdout (schema: /usr/local/share/doc/minitorr/cli-json.md)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand watch" -s h -l help -d 'Print help'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand watch" -s V -l version -d 'Print version'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "create_user" -d 'Register a new user with the tracker'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "login" -d 'Log in; files you shared before are shared again'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "logout" -d 'Log out and stop sharing all files until the next login'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "create_group" -d 'Create a group; you become its owner'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "join_group" -d 'Ask the owner of a group to let you in'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "leave_group" -d 'Leave a group (and stop sharing your files in it)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "list_requests" -d 'List pending join requests of a group you own, one user per line'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "accept_request" -d 'Let a user into a group you own'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "reject_request" -d 'Turn down a user\'s request to join a group you own'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "remove_member" -d 'Remove a member from a group you own (their shares there are withdrawn and their open downloads from other members are cut)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "list_groups" -d 'List all groups in the network and your relation to each'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "list_files" -d 'List the files shared in a group, or the files of one item (a shared directory tree)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "upload_file" -d 'Share a local file with a group (it is hashed first, which takes a while for big files)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "download_file" -d 'Start downloading a file of a group'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "show_downloads" -d 'Show downloads: [D] downloading, [C] complete, [F] failed, [P] paused, [Q] queued'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "stop_share" -d 'Stop sharing one of your files in a group'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "remove_file" -d 'Remove a file from a group you own, whoever shares it'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "cancel" -d 'Stop a download and forget it; its part file is deleted unless --keep'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "pause" -d 'Pause a running or queued download ([P] in show_downloads)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "resume" -d 'Continue a paused (or failed) download from its part file'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "remove" -d 'Forget finished or failed entries in show_downloads'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "status" -d 'Show who is logged in, the tracker connection and counts'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "wait" -d 'Wait for a download that is already running to finish (for scripts)'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "completions" -d 'Print a shell completion script on stdout'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "man" -d 'Write man pages (minitorrctl.1 and one per command) into a directory'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "devices" -d 'List your devices: the daemons that log in by themselves after a restart'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "revoke_device" -d 'Revoke one of your devices: its sessions end and it no longer logs in by itself'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "list_shares" -d 'List what you share: per file its group, path, size, bytes uploaded, peers served, state'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "watch" -d 'Print minitorrd\'s events as they happen: progress, completion, failures, peers, shares'
complete -c minitorrctl -n "__fish_minitorrctl_using_subcommand help; and not __fish_seen_subcommand_from create_user login logout create_group join_group leave_group list_requests accept_request reject_request remove_member list_groups list_files upload_file download_file show_downloads stop_share remove_file cancel pause resume remove status wait completions man devices revoke_device list_shares watch help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'

# Group and file names come from the daemon (`minitorrctl __complete`; quiet, and empty
# when minitorrd is not running or not logged in).
function __minitorrctl_positionals
    set -l tokens (commandline -opc)
    set -l out
    set -l skip 0
    for t in $tokens[2..-1]
        if test $skip = 1
            set skip 0
            continue
        end
        switch $t
            case --socket --dest --name --only --timeout
                set skip 1
            case '-*'
            case '*'
                set -a out $t
        end
    end
    printf '%s\n' $out
end
function __minitorrctl_socket
    set -l tokens (commandline -opc)
    if set -l i (contains -i -- --socket $tokens)
        printf '%s\n' --socket $tokens[(math $i + 1)]
    end
end
function __minitorrctl_wants --argument-names cmd n
    set -l p (__minitorrctl_positionals)
    test (count $p) -ge 1; and test "$p[1]" = $cmd; and test (count $p) -eq $n
end
complete -c minitorrctl -n '__minitorrctl_wants join_group 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants leave_group 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants list_requests 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants accept_request 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants reject_request 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants remove_member 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants list_files 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants upload_file 2' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants download_file 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants download_file 2' -f -a '(minitorrctl (__minitorrctl_socket) __complete files (__minitorrctl_positionals)[2] 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants stop_share 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants stop_share 2' -f -a '(minitorrctl (__minitorrctl_socket) __complete files (__minitorrctl_positionals)[2] 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants remove_file 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants remove_file 2' -f -a '(minitorrctl (__minitorrctl_socket) __complete files (__minitorrctl_positionals)[2] 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants cancel 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants cancel 2' -f -a '(minitorrctl (__minitorrctl_socket) __complete files (__minitorrctl_positionals)[2] 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants pause 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants pause 2' -f -a '(minitorrctl (__minitorrctl_socket) __complete files (__minitorrctl_positionals)[2] 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants resume 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants resume 2' -f -a '(minitorrctl (__minitorrctl_socket) __complete files (__minitorrctl_positionals)[2] 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants remove 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants remove 2' -f -a '(minitorrctl (__minitorrctl_socket) __complete files (__minitorrctl_positionals)[2] 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants wait 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants wait 2' -f -a '(minitorrctl (__minitorrctl_socket) __complete files (__minitorrctl_positionals)[2] 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants watch 1' -f -a '(minitorrctl (__minitorrctl_socket) __complete groups 2>/dev/null)'
complete -c minitorrctl -n '__minitorrctl_wants watch 2' -f -a '(minitorrctl (__minitorrctl_socket) __complete files (__minitorrctl_positionals)[2] 2>/dev/null)'
