"""Network inboxes are detected from mountinfo, so they get polled."""

from __future__ import annotations

from pathlib import Path

from caixa.daemon.mounts import filesystem_type, is_network, parse_mountinfo

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /mnt/nas rw,relatime shared:5 - nfs4 nas:/export rw,vers=4.2
31 22 0:41 / /mnt/win\\040share rw - cifs //pc/share rw
32 22 0:42 / /home/ana/remote rw,nosuid - fuse.sshfs ana@box:/ rw
33 22 0:43 / /mnt/host rw - 9p hostshare rw,trans=virtio
34 30 8:2 / /mnt/nas/local rw - ext4 /dev/sdb1 rw
"""


def test_parse_unescapes_mount_points() -> None:
    assert ("/mnt/win share", "cifs") in parse_mountinfo(MOUNTINFO)


def test_the_deepest_mount_decides() -> None:
    kinds = {
        "/mnt/nas/inbox": "nfs4",
        "/mnt/nas/local/inbox": "ext4",
        "/mnt/win share/scans": "cifs",
        "/home/ana/remote/in": "fuse.sshfs",
        "/mnt/host": "9p",
        "/mnt/nasty": "ext4",
        "/srv/inbox": "ext4",
    }
    for path, kind in kinds.items():
        assert filesystem_type(Path(path), MOUNTINFO) == kind, path
    assert is_network(Path("/mnt/nas/inbox"), MOUNTINFO)
    assert is_network(Path("/home/ana/remote/in"), MOUNTINFO)
    assert not is_network(Path("/mnt/nas/local/x"), MOUNTINFO)


def test_this_machine_reads_its_own_mountinfo(tmp_path: Path) -> None:
    assert filesystem_type(tmp_path) not in ("unknown", "")
