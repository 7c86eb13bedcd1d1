#!/usr/bin/env bash
# Minitorr in one command: builds the binaries, starts a tracker and three peers on 127.0.0.1
# in a temporary directory, and walks through the seed's commands — accounts, a group, a join
# request, sharing a 48 MiB file from two members and downloading it from both at once.
#
#   contrib/demo.sh            run the walk-through, then stop everything
#   KEEP=1 contrib/demo.sh     leave the tracker and peers running to try commands yourself
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins --quiet
BIN=$PWD/target/release
DEMO=$(mktemp -d /tmp/minitorr-demo.XXXXXX)
PIDS=()
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then
    echo; echo "Still running (PIDs ${PIDS[*]}). Try: $BIN/minitorrctl --socket $DEMO/carol/ctl.sock show_downloads"
    echo "Stop with: kill ${PIDS[*]}"
    return
  fi
  kill "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$DEMO"
}
trap cleanup EXIT

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { local who=$1; shift; say "minitorrctl $* ($who)"; "$BIN/minitorrctl" --socket "$DEMO/$who/ctl.sock" "$@"; }

# The seed's tracker_info.txt: tracker IP and port lines.
printf '127.0.0.1\n5600\n' > "$DEMO/tracker_info.txt"
"$BIN/trackerd" --state-dir "$DEMO/tracker" "$DEMO/tracker_info.txt" 2> "$DEMO/trackerd.log" &
PIDS+=($!)
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/5600) 2>/dev/null && break; sleep 0.05; done
port=7601
for who in alice bob carol; do
  mkdir -p "$DEMO/$who"
  "$BIN/minitorrd" --socket "$DEMO/$who/ctl.sock" --state-dir "$DEMO/$who/state" \
    "127.0.0.1:$port" "$DEMO/tracker_info.txt" 2> "$DEMO/$who/minitorrd.log" &
  PIDS+=($!)
  port=$((port + 1))
done
for who in alice bob carol; do
  for _ in $(seq 100); do [ -S "$DEMO/$who/ctl.sock" ] && break; sleep 0.05; done
done

run alice create_user alice secret-a
run alice login alice secret-a
run bob create_user bob secret-b
run bob login bob secret-b
run carol create_user carol secret-c
run carol login carol secret-c
run alice create_group team
run bob join_group team
run carol join_group team
run alice list_requests team
run alice accept_request team bob
run alice accept_request team carol
run carol list_groups

head -c $((48 * 1024 * 1024)) /dev/urandom > "$DEMO/alice/video.bin"
cp "$DEMO/alice/video.bin" "$DEMO/bob/video.bin"
run alice upload_file "$DEMO/alice/video.bin" team
run bob upload_file "$DEMO/bob/video.bin" team
run carol list_files team
mkdir -p "$DEMO/carol/downloads"
run carol download_file team video.bin "$DEMO/carol/downloads" --wait
run carol show_downloads
run carol --json show_downloads | grep -E '"(user|bytes_received)"'
say "sha1sum (original vs downloaded)"
sha1sum "$DEMO/alice/video.bin" "$DEMO/carol/downloads/video.bin"
run carol list_files team
run alice stop_share team video.bin
run alice logout
run alice login alice secret-a
echo; echo "Demo finished: logs are in $DEMO (kept only with KEEP=1)."
