#!/usr/bin/env bash
# The compose cluster's TLS material (make cluster-up): a cluster CA in tls/ca, made
# once, and for every daemon a directory tls/SERVICE (ca.crt, tls.crt, tls.key) whose
# certificate names the container's address and host name, plus tls/client.admin for
# the setup jobs and for clients on the host. Kept while the cluster's volumes are,
# so that restarted containers still trust each other; `make cluster-down` removes it.
# Usage: certs.sh LCPFS_BINARY
set -euo pipefail

lcpfs=${1:?usage: certs.sh LCPFS_BINARY}
tls="$(cd "$(dirname "$0")" && pwd)/tls"
"$lcpfs" cert ca "$tls/ca" --if-missing

issue() { # ENTITY DIR HOST...
  local entity=$1 dir=$2 host hosts=()
  shift 2
  # Kept while the CA that issued it is the current one.
  if [[ -f "$tls/$dir/tls.crt" ]] && cmp -s "$tls/$dir/ca.crt" "$tls/ca/ca.crt"; then return; fi
  for host in "$@"; do hosts+=(--host "$host"); done
  "$lcpfs" cert issue "$entity" --ca "$tls/ca" --out "$tls/$dir" ${hosts[@]+"${hosts[@]}"}
}

n=1
for name in a b c; do
  issue "mon.$name" "mon-$name" "10.77.0.1$n" "mon-$name"
  n=$((n + 1))
done
for i in 0 1 2 3 4 5 6; do
  issue "osd.$i" "osd-$i" "10.77.0.2$((i + 1))" "osd-$i"
done
issue client.admin client.admin
