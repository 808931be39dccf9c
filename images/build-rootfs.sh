#!/usr/bin/env bash
# Builds a root filesystem for a Debian package (see images/rootfs.py):
#   images/build-rootfs.sh PACKAGE [--out DIR] [--force]
# Output: DIR (default images/out/rootfs-PACKAGE), DIR.manifest,
# DIR.manifest.sha256 (the image digest) and DIR.packages. Runs as root.
set -euo pipefail
exec python3 "$(dirname "$0")/rootfs.py" build "$@"
