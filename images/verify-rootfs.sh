#!/usr/bin/env bash
# Checks that a root filesystem matches its manifest (see images/rootfs.py):
#   images/verify-rootfs.sh DIR MANIFEST [--digest HEX]
# Exit 0 if it does; 1 and a list of differences if not.
set -euo pipefail
exec python3 "$(dirname "$0")/rootfs.py" verify "$@"
