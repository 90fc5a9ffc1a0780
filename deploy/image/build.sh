#!/usr/bin/env bash
# Builds the LCPFS container image from the release binaries on this machine.
#
# No registry can be assumed, so the image starts FROM scratch: it holds the three
# binaries (lcpfs, lcpfs-mon, lcpfs-osd) and exactly the shared libraries they load
# (found with ldd), stripped of debug information, nothing else.
# Usage: build.sh BIN_DIR [TAG]
set -euo pipefail

bin_dir=${1:?usage: build.sh BIN_DIR [TAG]}
tag=${2:-lcpfs:dev}
here=$(cd "$(dirname "$0")" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage/rootfs/usr/local/bin" "$stage/rootfs/tmp" "$stage/rootfs/var/lib/lcpfs"
chmod 1777 "$stage/rootfs/tmp"
for binary in lcpfs lcpfs-mon lcpfs-osd; do
  # Debug line tables stay on the build machine; symbols stay for backtraces.
  strip --strip-debug -o "$stage/rootfs/usr/local/bin/$binary" "$bin_dir/$binary"
  chmod 0755 "$stage/rootfs/usr/local/bin/$binary"
  # Each library at the path the dynamic loader looks for it.
  ldd "$bin_dir/$binary" | awk '/=>/ { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
    [ -e "$lib" ] || continue
    mkdir -p "$stage/rootfs$(dirname "$lib")"
    cp -L "$lib" "$stage/rootfs$lib"
  done
done
# Host names in logs and CRUSH defaults come from the container's hostname.
mkdir -p "$stage/rootfs/etc"
echo "lcpfs:x:0:0::/var/lib/lcpfs:/usr/local/bin/lcpfs" > "$stage/rootfs/etc/passwd"
cp "$here/Dockerfile" "$stage/Dockerfile"
docker build --quiet --tag "$tag" "$stage" >/dev/null 2>"$stage/build.log" || {
  cat "$stage/build.log" >&2
  exit 1
}
echo "built image $tag ($(docker image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec))"
