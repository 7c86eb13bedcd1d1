#!/usr/bin/env bash
# Regenerate the shipped shell completions and man pages of minitorrctl, and the man pages
# trackerd.8 (with trackerd-rotate-key.8) and minitorrd.1, from the binaries, so they always match their clap definitions.
# minitorrctl/tests/shipped.rs and tests/tests/packaging.rs fail when they are stale.
#
#   contrib/gen-completions.sh                 # builds the three binaries (debug) first
#   MINITORRCTL=… TRACKERD=… MINITORRD=… contrib/gen-completions.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${MINITORRCTL:-}
trackerd=${TRACKERD:-}
minitorrd=${MINITORRD:-}
if [ -z "$bin" ] || [ -z "$trackerd" ] || [ -z "$minitorrd" ]; then
    cargo build --quiet --manifest-path "$root/Cargo.toml" -p minitorrctl -p trackerd -p minitorrd --bins
    out="${CARGO_TARGET_DIR:-$root/target}/debug"
    bin=${bin:-$out/minitorrctl}
    trackerd=${trackerd:-$out/trackerd}
    minitorrd=${minitorrd:-$out/minitorrd}
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
"$trackerd" --generate-man "$man"
"$minitorrd" --generate-man "$man"
echo "regenerated $(ls "$comp" | wc -l) completion scripts and $(ls "$man" | wc -l) man pages"
