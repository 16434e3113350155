"""Which filesystem a folder lives on, read from /proc/self/mountinfo: inotify sees nothing
that another machine writes to a network share, so such inboxes are polled; and only a local
filesystem's ctime tells how long a file has rested."""

from __future__ import annotations

import os
from pathlib import Path

NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre",
        "davfs", "ncpfs", "coda", "gpfs", "beegfs", "orangefs", "ocfs2", "gfs2",
        "fuse.sshfs", "fuse.glusterfs", "fuse.rclone", "fuse.s3fs", "fuse.davfs2",
        "fuse.cephfs", "fuse.gvfsd-fuse", "fuse.smbnetfs",
    }
)  # fmt: skip


# Filesystems that keep this machine's kernel's times (a ctime set by its own clock); others
# (network shares, a VM's shared folders, FUSE) may carry another machine's or a cached one.
LOCAL_FILESYSTEMS = frozenset(
    {
        "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "reiserfs", "nilfs2", "bcachefs",
        "zfs", "tmpfs", "overlay",
    }
)  # fmt: skip


def parse_mountinfo(text: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) pairs, in the order the kernel lists them."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        point = fields[4].encode().decode("unicode_escape")  # \040 is a space
        mounts.append((point, right.split()[0]))
    return mounts


def filesystem_type(path: Path, mountinfo: str | None = None) -> str:
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return "unknown"
    real = os.path.realpath(path)
    best, fstype = "", "unknown"
    for point, kind in parse_mountinfo(mountinfo):
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # later mounts shadow earlier ones
            best, fstype = point, kind
    return fstype


def is_network(path: Path, mountinfo: str | None = None) -> bool:
    return filesystem_type(path, mountinfo) in NETWORK_FILESYSTEMS
