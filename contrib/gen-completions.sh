#!/usr/bin/env bash
# Regenerate the shipped shell completions and man pages of minitorrctl from the binary, so
# they always match its clap definition. minitorrctl/tests/shipped.rs fails when they are stale.
#
#   contrib/gen-completions.sh                 # builds minitorrctl (debug) first
#   MINITORRCTL=path/to/minitorrctl contrib/gen-completions.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${MINITORRCTL:-}
if [ -z "$bin" ]; then
    cargo build --quiet --manifest-path "$root/Cargo.toml" -p minitorrctl
    bin="${CARGO_TARGET_DIR:-$root/target}/debug/minitorrctl"
fi

# Output must not depend on who runs this.
run() { env -u MINITORR_SOCKET -u XDG_RUNTIME_DIR NO_COLOR=1 "$bin" "$@"; }

comp="$root/contrib/completions"
man="$root/contrib/man"
mkdir -p "$comp" "$man"
run completions bash > "$comp/minitorrctl.bash"
run completions zsh > "$comp/_minitorrctl"
run completions fish > "$comp/minitorrctl.fish"
# Remove pages of commands that no longer exist.
rm -f "$man"/minitorrctl*.1
run man "$man"
echo "regenerated $(ls "$comp" | wc -l) completion scripts and $(ls "$man" | wc -l) man pages"
