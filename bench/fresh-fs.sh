#!/usr/bin/env bash
# Run a command (default: bench/run.sh, i.e. `make bench`) with TMPDIR on a fresh ext4 filesystem made for
# it: an image file in /var/tmp, made with mkfs.ext4's defaults (a journal), loop-mounted with direct I/O,
# removed afterwards. Every system's data (spools, Huey's SQLite file, Redis's folder) is then on a disk
# with no history: on ext4 without a journal a file's create steps over every inode freed in the last
# minute or so, so there a run's rates depend on what used the disk just before (bench/README.md,
# "The filesystem"). Needs root and a loop device (Linux).
#   FRESH_FS_SIZE=8G   the image's size (sparse: it takes what is written)
#   make bench-fresh-fs [BENCH_SCALE=small]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ "$(id -u)" -eq 0 ] || { echo "fresh-fs: needs root (losetup, mount)" >&2; exit 2; }
[ $# -gt 0 ] || set -- "$here/run.sh"

work="$(mktemp -d /var/tmp/spoold-fresh-fs.XXXXXX)"
image="$work/fs.img"
mountpoint="$work/mnt"
device=""
cleanup() {
    mountpoint -q "$mountpoint" && umount "$mountpoint"
    [ -n "$device" ] && losetup -d "$device" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

truncate -s "${FRESH_FS_SIZE:-8G}" "$image"
mkfs.ext4 -q -F "$image"
device="$(losetup --find --show --direct-io=on "$image")"
mkdir -p "$mountpoint"
mount "$device" "$mountpoint"
chmod 1777 "$mountpoint"
echo "fresh-fs: TMPDIR=$mountpoint (ext4 with a journal, on $device)" >&2
TMPDIR="$mountpoint" "$@"
