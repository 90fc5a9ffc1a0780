#!/usr/bin/env bash
# A smoke test of the compose cluster (make cluster-test): waits until 6 OSDs are up
# and every PG is active+clean, writes objects, stops one OSD container and reads
# and writes through it, starts it again and waits for the cluster to be clean;
# then restarts every daemon, one at a time, while a client writes and reads, and
# requires that the client saw no error.
# Usage: smoke.sh LCPFS_BINARY
set -euo pipefail

lcpfs=${1:?usage: smoke.sh LCPFS_BINARY}
export LCPFS_MON=10.77.0.11:6789,10.77.0.12:6789,10.77.0.13:6789
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
compose+=(-p lcpfs -f "$(dirname "$0")/docker-compose.yml")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Waits up to $1 seconds for `lcpfs status --json` to satisfy the jq-free check $2
# (a grep pattern over the JSON).
wait_status() {
  local deadline=$((SECONDS + $1))
  until "$lcpfs" --json --timeout 5 status 2>/dev/null | tr -d ' \n' | grep -q "$2"; do
    if ((SECONDS > deadline)); then
      echo "timed out waiting for status matching $2" >&2
      "$lcpfs" status >&2 || true
      exit 1
    fi
    sleep 2
  done
}

wait_status 180 '"osds_up":6'
wait_status 180 '"pg_states":{"active+clean":80}'
echo "cluster up: 6 OSDs, 80 PGs active+clean"

head -c 3000000 /dev/urandom > "$work/blob"
for n in $(seq 1 20); do "$lcpfs" put data "object-$n" "$work/blob"; done

"${compose[@]}" stop osd-0
for n in $(seq 1 20); do
  "$lcpfs" --timeout 60 get data "object-$n" "$work/copy"
  cmp -s "$work/blob" "$work/copy" || { echo "object-$n differs" >&2; exit 1; }
done
for n in $(seq 21 30); do "$lcpfs" --timeout 60 put data "object-$n" "$work/blob"; done
echo "reads and writes served with osd-0 stopped"

"${compose[@]}" start osd-0
wait_status 180 '"osds_up":6'
wait_status 240 '"pg_states":{"active+clean":80}'
for n in $(seq 1 30); do
  "$lcpfs" get data "object-$n" "$work/copy"
  cmp -s "$work/blob" "$work/copy" || { echo "object-$n differs" >&2; exit 1; }
done
echo "30 objects intact, all PGs active+clean"

# Rolling restart under load: a client writes and reads back objects throughout.
(
  n=0
  while [ ! -e "$work/stop" ]; do
    n=$((n + 1))
    if ! "$lcpfs" --timeout 60 put data "rolling-$n" "$work/blob" 2>>"$work/errors" ||
      ! "$lcpfs" --timeout 60 get data "rolling-$n" "$work/rolling-copy" 2>>"$work/errors" ||
      ! cmp -s "$work/blob" "$work/rolling-copy"; then
      echo "rolling-$n failed" >>"$work/errors"
    fi
  done
  echo "$n" >"$work/count"
) &
load=$!
for daemon in mon-a mon-b mon-c osd-0 osd-1 osd-2 osd-3 osd-4 osd-5; do
  "${compose[@]}" restart -t 20 "$daemon" >/dev/null 2>&1
  wait_status 120 '"osds_up":6'
  wait_status 240 '"pg_states":{"active+clean":80}'
  echo "restarted $daemon"
done
touch "$work/stop"
wait "$load"
if [ -s "$work/errors" ]; then
  echo "the client saw errors during the rolling restart:" >&2
  cat "$work/errors" >&2
  exit 1
fi
echo "smoke test passed: rolling restart of 9 daemons under load, $(cat "$work/count") objects written and read back without an error"
