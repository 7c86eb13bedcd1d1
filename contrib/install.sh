#!/usr/bin/env bash
# Build Minitorr in release mode and install it the usual Unix way.
#
#   contrib/install.sh [--prefix DIR] [--dest DESTDIR] [--no-build] [--bin-dir DIR]
#
#   --prefix DIR    installation prefix (default /usr/local)
#   --dest DESTDIR  staging root for packagers: files go to DESTDIR/PREFIX/… (default: none)
#   --no-build      do not run cargo; install binaries that are already built
#   --bin-dir DIR   where the built binaries are (default: target/release, or $CARGO_TARGET_DIR/release)
#
# Installs, below PREFIX:
#   bin/trackerd bin/minitorrd bin/minitorrctl
#   lib/systemd/system/trackerd.service      (system unit)
#   lib/systemd/user/minitorrd.service       (user unit, for `systemctl --user`)
#   share/doc/minitorr/{trackerd,minitorrd}.toml   commented example configs
#   share/doc/minitorr/{README,cli,cli-json,OPERATIONS,SECURITY,…}.md   the docs the man pages cite
#   share/bash-completion/completions/minitorrctl
#   share/zsh/site-functions/_minitorrctl
#   share/fish/vendor_completions.d/minitorrctl.fish
#   share/man/man1/{minitorrctl*,minitorrd}.1 share/man/man8/trackerd*.8
# The units and man pages name /usr/local/bin/… and /usr/local/share/doc/minitorr/…; with another
# prefix those paths are rewritten to match. Nothing outside PREFIX is touched and no service is started.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
prefix=/usr/local
dest=
build=1
bindir=

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --dest | --destdir) dest=${2:?--dest needs a directory}; shift 2 ;;
        --dest=* | --destdir=*) dest=${1#*=}; shift ;;
        --no-build) build=0; shift ;;
        --bin-dir) bindir=${2:?--bin-dir needs a directory}; shift 2 ;;
        --bin-dir=*) bindir=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
case $prefix in /*) ;; *) echo "install.sh: --prefix must be an absolute path" >&2; exit 2 ;; esac
prefix=${prefix%/}
[ -n "$prefix" ] || prefix=/

bins=(trackerd minitorrd minitorrctl)
if [ -z "$bindir" ]; then
    bindir="${CARGO_TARGET_DIR:-$root/target}/release"
fi
if [ "$build" = 1 ]; then
    cargo build --release --locked --manifest-path "$root/Cargo.toml" \
        -p trackerd -p minitorrd -p minitorrctl --bins
fi
for b in "${bins[@]}"; do
    [ -x "$bindir/$b" ] || {
        echo "install.sh: $bindir/$b not built (run without --no-build, or pass --bin-dir)" >&2
        exit 1
    }
done

top="$dest$prefix"
inst() { install -D -m "$1" "$2" "$3"; }    # mode source target
echo "installing into $top"

for b in "${bins[@]}"; do inst 0755 "$bindir/$b" "$top/bin/$b"; done

# Units: make ExecStart= and the documentation path follow the prefix.
pfx=$prefix
[ "$pfx" = / ] && pfx=
unit() { # source target
    sed -e "s#/usr/local/bin/#$pfx/bin/#g" -e "s#/usr/local/share/#$pfx/share/#g" "$1" >"$2.tmp"
    chmod 0644 "$2.tmp"
    mv "$2.tmp" "$2"
}
mkdir -p "$top/lib/systemd/system" "$top/lib/systemd/user"
unit "$root/contrib/systemd/trackerd.service" "$top/lib/systemd/system/trackerd.service"
unit "$root/contrib/systemd/minitorrd.service" "$top/lib/systemd/user/minitorrd.service"

doc="$top/share/doc/minitorr"
inst 0644 "$root/contrib/trackerd.toml" "$doc/trackerd.toml"
inst 0644 "$root/contrib/minitorrd.toml" "$doc/minitorrd.toml"
# The documentation the man pages and --help point at (e.g. the --json schema, cli-json.md).
inst 0644 "$root/README.md" "$doc/README.md"
for md in "$root"/docs/*.md; do
    inst 0644 "$md" "$doc/$(basename "$md")"
done

inst 0644 "$root/contrib/completions/minitorrctl.bash" "$top/share/bash-completion/completions/minitorrctl"
inst 0644 "$root/contrib/completions/_minitorrctl" "$top/share/zsh/site-functions/_minitorrctl"
inst 0644 "$root/contrib/completions/minitorrctl.fish" "$top/share/fish/vendor_completions.d/minitorrctl.fish"

for page in "$root"/contrib/man/*.[0-9]; do
    name=$(basename "$page")
    mkdir -p "$top/share/man/man${name##*.}"
    unit "$page" "$top/share/man/man${name##*.}/$name"
done

cat <<EOF
done. Next steps:
  tracker (system):  mkdir -p /etc/minitorr && cp $pfx/share/doc/minitorr/trackerd.toml /etc/minitorr/  # optional config
                     systemctl daemon-reload && systemctl enable --now trackerd
  peer (per user):   mkdir -p ~/.config/minitorr && cp $pfx/share/doc/minitorr/minitorrd.toml ~/.config/minitorr/  # optional config
                     systemctl --user daemon-reload && systemctl --user enable --now minitorrd
  documentation:     $pfx/share/doc/minitorr/ (README.md, cli.md, cli-json.md, OPERATIONS.md, SECURITY.md)
EOF
if [ "$prefix" != /usr ] && [ "$prefix" != /usr/local ]; then
    echo "note: systemd does not look for units in $prefix/lib/systemd; link or copy them to" \
        "/etc/systemd/system and /etc/systemd/user."
fi
