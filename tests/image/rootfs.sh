#!/usr/bin/env sh
# Assembles the runtime filesystem of the rightsizer image: the stripped binary, the
# shared libraries it links (from ldd, so glibc and libgcc come from the build machine),
# a non-root user (65532) and the CA bundle. Used by the Dockerfile's build stage and by
# tests/image/build.sh, so both images hold the same files.
#
# Usage: tests/image/rootfs.sh BINARY OUTDIR
set -eu
bin=${1:?usage: rootfs.sh BINARY OUTDIR}
out=${2:?usage: rootfs.sh BINARY OUTDIR}
rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc" "$out/tmp" "$out/home/nonroot"
cp "$bin" "$out/usr/local/bin/rightsizer"
strip --strip-all "$out/usr/local/bin/rightsizer"
# Lines look like "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
# "/lib64/ld-linux-x86-64.so.2 (0x...)"; copy each resolved file at its path.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u |
  while read -r lib; do cp -L --parents "$lib" "$out/"; done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$out/etc/group"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$out/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/"
fi
chmod 1777 "$out/tmp"
