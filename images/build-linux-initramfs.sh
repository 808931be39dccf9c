#!/usr/bin/env bash
# Builds what Linux mode boots, from Debian packages fetched with apt-get:
#   images/out/linux/bzImage          Debian's cloud kernel (linux-image-cloud-amd64)
#   images/out/linux/vmlinux          the ELF kernel inside that bzImage (for the PVH entry)
#   images/out/linux/initramfs.cpio.gz  busybox-static, with an /init that prints
#                                     the marker below and powers off
#   images/out/linux/VERSION          the kernel package and version
#   images/out/linux/SHA256SUMS
# Needs: apt-get, dpkg-deb, cpio, gzip, and lz4 (Debian's 6.1 payload; xz or
# zstd for other kernels) for the vmlinux.
# Run as root on Debian 12 (apt-get update is run if the package lists are empty).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/images/out/linux"
marker="DMVX-INITRAMFS-MARKER: init reached, powering off"

for tool in apt-get apt-cache dpkg-deb cpio gzip od dd; do
    command -v "$tool" >/dev/null || {
        echo "build-linux-initramfs: '$tool' is missing (apt-get install cpio dpkg gzip coreutils)" >&2
        exit 1
    }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# apt-get download fetches as the unprivileged _apt user when it can write here.
chmod 777 "$work"

if ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
    apt-get update -q
fi
# linux-image-cloud-amd64 is a metapackage: download the versioned package it depends on.
pkg="$(apt-cache show --no-all-versions linux-image-cloud-amd64 |
    sed -n 's/^Depends: .*\(linux-image-[0-9][^ ,]*-cloud-amd64\).*/\1/p' | head -n1)"
if [ -z "$pkg" ]; then
    echo "build-linux-initramfs: cannot tell which kernel package linux-image-cloud-amd64 depends on" >&2
    exit 1
fi
echo "kernel package: $pkg"
(cd "$work" && apt-get download -q "$pkg" busybox-static)
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/kernel"
dpkg-deb -x "$work"/busybox-static_*.deb "$work/busybox"

vmlinuz="$(ls "$work"/kernel/boot/vmlinuz-* | head -n1)"
mkdir -p "$out"
cp "$vmlinuz" "$out/bzImage"
echo "$pkg $(basename "$vmlinuz" | sed 's/^vmlinuz-//')" >"$out/VERSION"

# vmlinux: the bzImage's payload (setup header fields payload_offset at 0x248
# and payload_length at 0x24c, relative to the protected-mode code that
# starts after the (setup_sects + 1) * 512 bytes of real-mode setup) is the
# compressed ELF kernel.
u8() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
setup_sects="$(u8 "$out/bzImage" $((0x1f1)))"
[ "$setup_sects" -eq 0 ] && setup_sects=4
payload_offset="$(u32 "$out/bzImage" $((0x248)))"
payload_length="$(u32 "$out/bzImage" $((0x24c)))"
start=$(((setup_sects + 1) * 512 + payload_offset))
dd if="$out/bzImage" of="$work/payload" bs=4096 iflag=skip_bytes,count_bytes \
    skip="$start" count="$payload_length" status=none
magic="$(od -An -tx1 -N4 "$work/payload" | tr -d ' ')"
case "$magic" in
    fd377a58) decomp="xz -dc" ;;
    28b52ffd) decomp="zstd -dcq" ;;
    1f8b*) decomp="gzip -dc" ;;
    02214c18) decomp="lz4 -dc" ;;
    *)
        echo "build-linux-initramfs: unknown compression of the kernel payload (magic $magic)" >&2
        exit 1
        ;;
esac
command -v "${decomp%% *}" >/dev/null || {
    echo "build-linux-initramfs: the kernel payload needs '${decomp%% *}' (apt-get install lz4 xz-utils zstd)" >&2
    exit 1
}
# The payload is vmlinux followed by its relocation table; an ELF reader
# ignores what follows the sections. xz complains about that trailing data
# only after writing everything, so check the ELF magic instead of its status.
$decomp <"$work/payload" >"$out/vmlinux" 2>/dev/null || true
if [ "$(od -An -tx1 -N4 "$out/vmlinux" | tr -d ' ')" != "7f454c46" ]; then
    echo "build-linux-initramfs: the bzImage payload did not decompress to an ELF vmlinux" >&2
    exit 1
fi

# initramfs: busybox-static and an /init that prints the marker and powers off.
ir="$work/initramfs"
mkdir -p "$ir"/{bin,sbin,dev,proc,sys}
cp "$work/busybox/bin/busybox" "$ir/bin/busybox"
for app in sh mount echo poweroff cat; do ln -s busybox "$ir/bin/$app"; done
cat >"$ir/init" <<EOF
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec >/dev/console 2>&1
/bin/busybox mount -t proc proc /proc
echo "$marker"
/bin/busybox poweroff -f
EOF
chmod 755 "$ir/init"
# Reproducible: fixed timestamps and owners, sorted names.
find "$ir" -exec touch -h -d @0 {} +
(cd "$ir" && find . -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc --owner=0:0 --reproducible --quiet) | gzip -9n >"$out/initramfs.cpio.gz"
echo "$marker" >"$out/MARKER"

(cd "$out" && sha256sum bzImage vmlinux initramfs.cpio.gz >SHA256SUMS)
echo "built $out:"
cat "$out/VERSION" "$out/SHA256SUMS"
