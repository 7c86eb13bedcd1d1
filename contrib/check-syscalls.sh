#!/usr/bin/env bash
# Check that trackerd and minitorrd only make system calls allowed by the units'
# `SystemCallFilter=@system-service`, without a systemd PID 1: run a short real session (accounts,
# a group, a share, a download, SIGHUP, logout, SIGTERM) with both daemons under `strace -f`, then
# compare every syscall name seen with `systemd-analyze syscall-filter @system-service`.
#
#   contrib/check-syscalls.sh              # uses target/debug (cargo build --bins first)
#   BIN=target/release contrib/check-syscalls.sh
#   KEEP=1 contrib/check-syscalls.sh       # keep the strace output (path printed)
#
# Exit status: 0 when every syscall is in @system-service, 1 otherwise (offenders listed).
# Needs: strace, systemd-analyze. Results are recorded in docs/OPERATIONS.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "${BIN:-$root/target/debug}" && pwd)
for t in strace systemd-analyze; do
  command -v "$t" >/dev/null || { echo "check-syscalls: $t not installed" >&2; exit 2; }
done
W=$(mktemp -d /tmp/minitorr-syscalls.XXXXXX)
PIDS=()
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tport=$(free_port)
ctl() { local who=$1; shift; NO_COLOR=1 "$BIN/minitorrctl" --socket "$W/$who/ctl.sock" "$@" </dev/null >/dev/null 2>>"$W/ctl.log"; }

# A fake NOTIFY_SOCKET so the sd_notify path is exercised too.
python3 - "$W/notify.sock" <<'EOF' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1])
while True: s.recv(4096)
EOF
PIDS+=($!)
for _ in $(seq 100); do [ -S "$W/notify.sock" ] && break; sleep 0.05; done

mkdir -p "$W/conf" "$W/alice" "$W/bob"
echo 'log_level = "info"' > "$W/conf/trackerd.toml"
CONFIGURATION_DIRECTORY="$W/conf" STATE_DIRECTORY="$W/tracker" NOTIFY_SOCKET="$W/notify.sock" \
  strace -f -qq -o "$W/trackerd.strace" "$BIN/trackerd" --listen "127.0.0.1:$tport" \
  --state-dir "$W/tracker" 2>"$W/trackerd.log" &
PIDS+=($!)
for _ in $(seq 400); do (exec 3<>"/dev/tcp/127.0.0.1/$tport") 2>/dev/null && break; sleep 0.05; done
# Signals go to the daemon itself, not to strace (its parent).
tpid=$(pgrep -P "${PIDS[-1]}")

for who in alice bob; do
  pre=()
  [ "$who" = alice ] && pre=(strace -f -qq -o "$W/minitorrd.strace")
  NOTIFY_SOCKET="$W/notify.sock" "${pre[@]}" "$BIN/minitorrd" --socket "$W/$who/ctl.sock" \
    --state-dir "$W/$who/state" --tracker "127.0.0.1:$tport" "127.0.0.1:$(free_port)" \
    2>"$W/$who/minitorrd.log" &
  PIDS+=($!)
  for _ in $(seq 400); do [ -S "$W/$who/ctl.sock" ] && break; sleep 0.05; done
  [ "$who" = alice ] && apid=$(pgrep -P "${PIDS[-1]}")
done

ctl alice create_user alice pw-a; ctl alice login alice pw-a
ctl bob create_user bob pw-b; ctl bob login bob pw-b
ctl alice create_group g1
ctl bob join_group g1; ctl alice list_requests g1; ctl alice accept_request g1 bob
head -c $((3 * 1024 * 1024)) /dev/urandom > "$W/alice/f.bin"
ctl alice upload_file "$W/alice/f.bin" g1
ctl bob list_groups; ctl bob list_files g1
mkdir -p "$W/bob/out"
ctl bob download_file g1 f.bin "$W/bob/out" --wait
ctl bob show_downloads; ctl alice status
mkdir -p "$W/carol"; head -c 100000 /dev/urandom > "$W/carol/g.bin"
ctl bob upload_file "$W/carol/g.bin" g1
ctl alice download_file g1 g.bin "$W/alice" --wait
kill -HUP "$tpid"
for _ in $(seq 100); do grep -q "configuration reloaded" "$W/trackerd.log" && break; sleep 0.05; done
ctl alice stop_share g1 f.bin; ctl alice logout; ctl alice login alice pw-a
# strace exits with the status of the traced program: both must exit 0 on SIGTERM.
kill -TERM "$apid" "$tpid"
wait "${PIDS[1]}" || { echo "trackerd exited with $?" >&2; exit 1; }
wait "${PIDS[2]}" || { echo "minitorrd exited with $?" >&2; exit 1; }
cmp "$W/alice/f.bin" "$W/bob/out/f.bin"

# The set lists syscalls and nested @groups; expand the groups recursively.
expand() {
  systemd-analyze syscall-filter "$1" | awk 'NR > 1 && $1 !~ /^#/ {print $1}' | while read -r n; do
    case $n in @*) expand "$n" ;; *) echo "$n" ;; esac
  done
}
allowed=$(expand @system-service | sort -u)
status=0
for d in trackerd minitorrd; do
  # "123 name(args" lines; also "<... name resumed>" lines, whose calls started earlier.
  seen=$(sed -nE 's/^[0-9]+ +([a-z_0-9]+)\(.*/\1/p' "$W/$d.strace" | sort -u)
  bad=$(comm -23 <(echo "$seen") <(echo "$allowed"))
  echo "$d: $(echo "$seen" | wc -l) distinct syscalls: $(echo $seen)"
  if [ -n "$bad" ]; then
    echo "$d: NOT in @system-service: $(echo $bad)"; status=1
  else
    echo "$d: all in @system-service"
  fi
done
exit $status
