#!/usr/bin/env bash
# The two images a test node needs, from Debian's busybox-static (nothing is pulled):
#   rightsizer.test/busybox:1  /bin/busybox and its applets, for test workloads
#   rightsizer.test/pause:1    the pod sandbox: a static binary that blocks forever
# Usage: tests/image/node-images.sh OUTDIR   (writes OUTDIR/busybox.tar and OUTDIR/pause.tar)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: node-images.sh OUTDIR}
bb=$(command -v busybox) || { echo "image/node-images: busybox-static is not installed" >&2; exit 1; }
ldd "$bb" >/dev/null 2>&1 && { echo "image/node-images: $bb is not static" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/busybox/bin" "$work/busybox/tmp" "$work/busybox/etc"
cp "$bb" "$work/busybox/bin/busybox"
for applet in $("$bb" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$work/busybox/bin/$applet"
done
chmod 1777 "$work/busybox/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$work/busybox/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$work/busybox/etc/group"
"$here/archive.sh" "$work/busybox" rightsizer.test/busybox:1 "$out/busybox.tar" \
  '{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]}'

mkdir -p "$work/pause/bin"
cp "$bb" "$work/pause/bin/sleep"
"$here/archive.sh" "$work/pause" rightsizer.test/pause:1 "$out/pause.tar" \
  '{"Entrypoint":["/bin/sleep","infinity"]}'
