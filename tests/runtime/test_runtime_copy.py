"""Copying trees into and out of sandboxes: round trips, and copy_out of archives made by an attacker.

Three layers: crafted tar streams fed to the unpacker (attacks a real engine never produces, such as a
file written through a link), trees an attacker builds with shell commands inside a real DockerSandbox
(and a LocalSandbox) and that we then copy out, and round trips of ordinary trees.
"""
from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from loopcoder.runtime.archive import unpack_to
from loopcoder.runtime.errors import CopyError

ODD_NAMES = [b"bad\xffbyte", b"new\nline", b"...", b" ..", b"..\\x", b"-rf", "rtl\u202eevil".encode(),
             "h\u00e9llo w\u00f6rld \u65e5\u672c.txt".encode()]


# -- helpers ---------------------------------------------------------------------------------------


def snapshot(root: Path, skip: str = "out") -> dict:
    """Everything under ``root`` except ``skip``: type, mode, content or link target, link count."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and skip in dirnames:
            dirnames.remove(skip)
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                value = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                value = p.read_bytes()
            else:
                value = None
            seen[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), value,
                                              st.st_nlink if not stat.S_ISDIR(st.st_mode) else 0)
    if (root / skip).is_symlink():
        seen[skip] = os.readlink(root / skip)
    return seen


@pytest.fixture
def host(tmp_path) -> Path:
    """A host folder holding a canary the attacks aim at; copies go to host/out."""
    h = tmp_path / "host"
    (h / "canary").mkdir(parents=True)
    (h / "canary" / "secret").write_text("host secret\n")
    (h / "canary" / "victim").write_text("must stay\n")
    return h


def assert_confined(dest: Path) -> None:
    """Only files, folders and links that resolve inside ``dest``; no setuid/setgid/sticky or o+w bits."""
    real = os.path.realpath(dest)
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            assert stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode), p
            if not stat.S_ISLNK(st.st_mode):
                assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWOTH), (p, oct(st.st_mode))
            if stat.S_ISLNK(st.st_mode):
                resolved = os.path.realpath(p)
                assert resolved == real or resolved.startswith(real + os.sep), (p, os.readlink(p), resolved)


def no_staging_left(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if p.name.startswith(".loopcoder-copy-")]


def tar_of(*members: tuple) -> io.BytesIO:
    """A tar stream from (name, kind, extra) tuples; kind: file (extra=bytes), dir, sym/hard (extra=target),
    or a tarfile type constant."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for name, kind, *extra in members:
            info = tarfile.TarInfo(name)
            mode = extra[1] if len(extra) > 1 else None
            if kind == "file":
                data = extra[0]
                info.size, info.mode = len(data), mode or 0o644
                tar.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, mode or 0o755
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, extra[0]
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, extra[0]
            else:
                info.type, info.devmajor, info.devminor = kind, 1, 3
            tar.addfile(info)
    buf.seek(0)
    return buf


# -- crafted archives (no engine needed) -----------------------------------------------------------


@pytest.mark.parametrize("name", ["top/../../canary/victim", "/tmp/escape", "top/a/../../../x", "other/x",
                                  "../canary/victim", "./top/./../../x"])
def test_entry_names_outside_the_copy_refuse_the_whole_archive(host, name):
    before = snapshot(host)
    archive = tar_of(("top", "dir"), ("top/ok", "file", b"ok"), (name, "file", b"pwned\n"))
    with pytest.raises(CopyError) as e:
        unpack_to(archive, host / "out", "top")
    assert "\n" not in str(e.value)
    assert not (host / "out").exists() and no_staging_left(host)
    assert snapshot(host) == before


def test_files_are_never_written_through_a_link(host):
    before = snapshot(host)
    # A link inside the copy, then a file "through" it: refused (the engine never makes such an archive).
    with pytest.raises(CopyError, match="not a folder"):
        unpack_to(tar_of(("top", "dir"), ("top/d", "dir"), ("top/l", "sym", "d"), ("top/l/x", "file", b"x")),
                  host / "out", "top")
    # A link that leaves the copy is not created, so a later file of that name lands inside the copy.
    result = unpack_to(tar_of(("top", "dir"), ("top/l", "sym", "../canary"), ("top/l/victim", "file", b"pwned\n")),
                       host / "out", "top")
    assert (host / "out/l/victim").read_bytes() == b"pwned\n" and not (host / "out/l").is_symlink()
    assert [s.path for s in result.skipped] == ["l"]
    assert snapshot(host) == before
    assert_confined(host / "out")


def test_a_later_entry_cannot_turn_a_file_into_a_link_out(host):
    before = snapshot(host)
    result = unpack_to(tar_of(("top", "dir"), ("top/a", "file", b"1"), ("top/a", "sym", "/etc/passwd"),
                              ("top/b", "sym", "x"), ("top/b", "sym", "../../canary/secret"),
                              ("top/c", "dir"), ("top/c", "sym", ".."), ("top/c/f", "file", b"2")),
                       host / "out", "top")
    assert (host / "out/a").read_bytes() == b"1"
    assert os.readlink(host / "out/b") == "x"  # the second, escaping target was refused
    assert (host / "out/c").is_dir() and (host / "out/c/f").read_bytes() == b"2"
    assert {s.path for s in result.skipped} == {"a", "b", "c"}
    assert snapshot(host) == before
    assert_confined(host / "out")


@pytest.mark.parametrize("order", ["link-first", "link-last"])
def test_a_link_that_escapes_only_through_another_link_is_removed(host, order):
    # y -> "." makes "y/.." the copy's parent: x passes a per-link lexical check but points at the canary.
    x, y = ("top/x", "sym", "y/../canary/secret"), ("top/y", "sym", ".")
    members = [("top", "dir"), x, y] if order == "link-first" else [("top", "dir"), y, x]
    result = unpack_to(tar_of(*members), host / "out", "top")
    assert not os.path.lexists(host / "out/x")
    assert os.readlink(host / "out/y") == "."
    assert [s.path for s in result.skipped] == ["x"] and "outside the copy" in result.skipped[0].reason
    assert_confined(host / "out")


@pytest.mark.parametrize("target", ["../canary/secret", "/etc/passwd", "top/l/secret", "top/missing", "top/d"])
def test_hardlinks_only_reach_files_of_the_copy(host, target):
    before = snapshot(host)
    (host / "out2").mkdir()
    result = unpack_to(tar_of(("top", "dir"), ("top/d", "dir"), ("top/l", "sym", "../canary"),
                              ("top/h", "hard", target)), host / "out", "top")
    assert not os.path.lexists(host / "out/h")
    assert [s.path for s in result.skipped][-1] == "h"
    assert snapshot(host) == {**before, "out2": snapshot(host)["out2"]}
    assert os.stat(host / "canary/secret").st_nlink == 1


def test_hardlink_inside_the_copy_is_kept(host):
    result = unpack_to(tar_of(("top", "dir"), ("top/a", "file", b"data"), ("top/b", "hard", "top/a")),
                       host / "out", "top")
    assert result.hardlinks == 1 and os.stat(host / "out/b").st_ino == os.stat(host / "out/a").st_ino


def test_devices_fifos_and_special_mode_bits_are_never_created(host):
    result = unpack_to(tar_of(("top", "dir", None, 0o1777), ("top/null", tarfile.CHRTYPE),
                              ("top/disk", tarfile.BLKTYPE), ("top/pipe", tarfile.FIFOTYPE),
                              ("top/suid", "file", b"#!/bin/sh\n", 0o6777), ("top/ro", "file", b"r", 0o444)),
                       host / "out", "top")
    assert sorted(os.listdir(host / "out")) == ["ro", "suid"]
    assert {s.path: s.reason for s in result.skipped} == {
        "null": "character device not copied", "disk": "block device not copied", "pipe": "fifo not copied"}
    assert stat.S_IMODE(os.stat(host / "out/suid").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(host / "out/ro").st_mode) == 0o644  # the owner can always write
    assert stat.S_IMODE(os.stat(host / "out").st_mode) == 0o755
    assert_confined(host / "out")


def test_entry_and_byte_limits_stop_the_copy_and_keep_nothing(host):
    many = [("top", "dir")] + [(f"top/f{i}", "file", b"") for i in range(20)]
    with pytest.raises(CopyError, match=r"more than 10 entries \(max_entries\)"):
        unpack_to(tar_of(*many), host / "out", "top", max_entries=10)
    big = tar_of(("top", "dir"), ("top/a", "file", b"a" * 600_000), ("top/b", "file", b"b" * 600_000))
    with pytest.raises(CopyError, match=r"more than 1000000 bytes .*max_bytes.* at b"):
        unpack_to(big, host / "out", "top", max_bytes=1_000_000)
    assert not (host / "out").exists() and no_staging_left(host)


def test_odd_byte_names_are_created_as_they_are_inside_the_copy(host):
    before = snapshot(host)
    members = [("top", "dir")] + [("top/" + os.fsdecode(n), "file", n) for n in ODD_NAMES]
    result = unpack_to(tar_of(*members), host / "out", "top")
    assert sorted(os.listdir(os.fsencode(host / "out"))) == sorted(ODD_NAMES)
    for n in ODD_NAMES:
        assert (host / "out" / os.fsdecode(n)).read_bytes() == n
    assert result.files == len(ODD_NAMES)
    assert snapshot(host) == before


def test_an_existing_destination_is_kept_unless_overwrite(host):
    (host / "out").mkdir()
    (host / "out" / "old").write_text("old")
    with pytest.raises(CopyError, match="exists; pass overwrite=True"):
        unpack_to(tar_of(("top", "dir"), ("top/new", "file", b"n")), host / "out", "top")
    unpack_to(tar_of(("top", "dir"), ("top/new", "file", b"n")), host / "out", "top", overwrite=True)
    assert os.listdir(host / "out") == ["new"]
    # A destination that is a link to the canary is replaced, not written through.
    os.symlink(host / "canary", host / "link")
    before = snapshot(host / "canary")
    unpack_to(tar_of(("top", "dir"), ("top/victim", "file", b"pwned")), host / "link", "top", overwrite=True)
    assert (host / "link").is_dir() and not (host / "link").is_symlink()
    assert snapshot(host / "canary") == before


def test_garbage_is_a_one_line_copy_error(host):
    with pytest.raises(CopyError, match="unreadable archive") as e:
        unpack_to(io.BytesIO(b"\x1f\x8b" + os.urandom(3000)), host / "out", "top")
    assert "\n" not in str(e.value) and not (host / "out").exists() and no_staging_left(host)


# -- real sandboxes --------------------------------------------------------------------------------


@pytest.fixture(params=[pytest.param("docker", marks=pytest.mark.docker), "local"])
def any_sandbox(request, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    if request.param == "local":
        from loopcoder.runtime.local_sandbox import LocalSandbox

        with pytest.warns(UserWarning):
            sb = LocalSandbox(ws, allow=True)
        sb.scratch = str(ws / "scratch")  # LocalSandbox reaches the workspace only; commands run on the host
    else:
        from loopcoder.runtime.docker_sandbox import DockerSandbox

        client = request.getfixturevalue("docker_client")
        image = request.getfixturevalue("base_image")
        sb = DockerSandbox(ws, config=request.getfixturevalue("small_config"), image=image, client=client,
                           labels={"loopcoder.purpose": "test"})
        sb.scratch = "/tmp/scratch"
    with sb:
        yield sb


def make_tree(root: Path) -> None:
    """Modes, an empty folder, nested folders, links inside the tree (one dangling), odd names."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "private").mkdir(mode=0o700)
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    (root / "secret.txt").write_text("s")
    os.chmod(root / "secret.txt", 0o600)
    (root / "sub" / "deeper" / "data.bin").write_bytes(bytes(range(256)) * 100)
    os.symlink("../run.sh", root / "sub" / "link-to-run")
    os.symlink("sub/deeper", root / "dirlink")
    os.symlink("nowhere/yet", root / "dangling")
    os.link(root / "secret.txt", root / "sub" / "hardlink-to-secret")
    for n in ODD_NAMES:
        (root / os.fsdecode(n)).write_bytes(n)


def tree_state(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, os.fsencode(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), Path(os.fsdecode(p)).read_bytes())
    return out


def test_round_trip_keeps_modes_empty_folders_links_and_names(any_sandbox, tmp_path, host):
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    dest_in = f"{any_sandbox.scratch}/a/b/tree"  # parents missing: created
    sent = any_sandbox.copy_in(src, dest_in)
    inodes = {p.stat().st_ino: p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink()}
    assert sent.files == 3 + len(ODD_NAMES) and sent.symlinks == 3 and sent.bytes == sum(inodes.values())
    res = any_sandbox.exec(f"cd {dest_in} && stat -c '%u %a %n' . run.sh secret.txt private && readlink dirlink "
                           "&& ./sub/link-to-run && cat dirlink/data.bin | wc -c")
    lines = res.output.splitlines()
    uid = os.getuid() if any_sandbox.__class__.__name__ == "LocalSandbox" else any_sandbox.uid
    assert lines[:4] == [f"{uid} 755 .", f"{uid} 755 run.sh", f"{uid} 600 secret.txt", f"{uid} 700 private"]
    assert lines[4:] == ["sub/deeper", "hi", "25600"]
    got = any_sandbox.copy_out(dest_in, host / "out")
    assert got.skipped == [] and got.symlinks == 3 and sent.hardlinks == got.hardlinks == 1
    assert tree_state(host / "out") == tree_state(src)
    assert os.stat(host / "out/secret.txt").st_ino == os.stat(host / "out/sub/hardlink-to-secret").st_ino
    assert_confined(host / "out")


def test_copy_in_keeps_host_links_as_links_and_merges_folders(any_sandbox, tmp_path, host):
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(host / "canary" / "secret", src / "abs")  # followed on the host, it would leak the secret
    (src / "new.txt").write_text("new")
    dest = f"{any_sandbox.scratch}/merge"
    any_sandbox.exec(f"mkdir -p {dest} && echo old > {dest}/old.txt && echo stale > {dest}/new.txt")
    any_sandbox.copy_in(src, dest)
    res = any_sandbox.exec(f"cd {dest} && readlink abs && cat old.txt new.txt")
    assert res.output == f"{host / 'canary' / 'secret'}\nold\nnew"
    # One file onto a path whose folders are missing.
    any_sandbox.copy_in(src / "new.txt", f"{any_sandbox.scratch}/x/y/z.txt")
    assert any_sandbox.exec(f"chmod 751 {any_sandbox.scratch}/x/y/z.txt && cat {any_sandbox.scratch}/x/y/z.txt").output == "new"
    # And one file back out.
    got = any_sandbox.copy_out(f"{any_sandbox.scratch}/x/y/z.txt", host / "z.txt")
    assert got.files == 1 and (host / "z.txt").read_text() == "new"
    assert stat.S_IMODE((host / "z.txt").stat().st_mode) == 0o751


def test_copy_out_of_a_hostile_tree_leaves_the_host_untouched(any_sandbox, host):
    before = snapshot(host)
    canary = host / "canary"
    evil = f"{any_sandbox.scratch}/evil"
    script = f"""
        set -e
        mkdir -p {evil}/d1/d2 && cd {evil}
        ln -s {canary}/secret abs_host                # absolute link at a host path
        ln -s /etc abs_container
        ln -s ../../../../../../../../../.. up         # relative, far up
        ln -s ../canary/victim sibling                 # the copy's sibling on the host
        ln -s . y && ln -s y/../canary/victim x        # escapes only through another link
        ln -s d1/d2 deep && ln -s deep/../../canary z  # lexically inside, really outside
        mkfifo fifo
        echo s > suid && chmod 6755 suid && chmod 1777 d1 && chmod o+w d1/d2
        echo a > h1 && ln h1 h2
        echo o > ../outside && ln ../outside hl         # a hardlink to a file outside the copied folder
        mkdir -p deep && d=deep && for i in $(seq 1 60); do d=$d/d$i; done && mkdir -p $d && echo bottom > $d/f
        for n in $'bad\\xffbyte' $'new\\nline' '...' ' ..' '..\\x' -- -rf; do echo "$n" > "./$n"; done
    """
    assert any_sandbox.exec(script).exit_code == 0
    result = any_sandbox.copy_out(evil, host / "out")
    assert snapshot(host) == before
    assert_confined(host / "out")
    skipped = {s.path for s in result.skipped}
    assert {"abs_host", "abs_container", "up", "sibling", "x", "z", "fifo"} <= skipped
    assert os.readlink(host / "out" / "y") == "." and os.readlink(host / "out" / "deep") == "d1/d2"
    assert stat.S_IMODE(os.stat(host / "out" / "suid").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(host / "out" / "d1").st_mode) == 0o755
    assert (host / "out" / "h1").read_text() == "a\n" and os.listdir(os.fsencode(host / "out")).count(b"bad\xffbyte") == 1
    assert os.stat(host / "out" / "h1").st_ino == os.stat(host / "out" / "h2").st_ino
    assert (host / "out" / "hl").read_text() == "o\n" and os.stat(host / "out" / "hl").st_nlink == 1
    assert (host / "out" / "deep" / "/".join(f"d{i}" for i in range(1, 61)) / "f").read_text() == "bottom\n"


def test_copy_out_limits_apply_to_what_the_sandbox_made(any_sandbox, host):
    evil = f"{any_sandbox.scratch}/big"
    # A sparse file costs the sandbox nothing; the header alone stops the copy. (Under the sandbox's
    # per-file size cap, sandbox.max_file_size, and over the copy's max_bytes.)
    assert any_sandbox.exec(f"mkdir -p {evil} && truncate -s 900M {evil}/huge && "
                            f"mkdir {evil}/many && cd {evil}/many && touch $(seq 1 300)").exit_code == 0
    with pytest.raises(CopyError, match="max_bytes") as e:
        any_sandbox.copy_out(evil, host / "out", max_bytes=512 << 20)
    assert "\n" not in str(e.value)
    with pytest.raises(CopyError, match="max_entries"):
        any_sandbox.copy_out(f"{evil}/many", host / "out", max_entries=100)
    assert not (host / "out").exists() and no_staging_left(host)
    got = any_sandbox.copy_out(f"{evil}/many", host / "out", max_entries=301)
    assert got.files == 300


def test_copy_out_follows_a_top_level_link_inside_the_sandbox(any_sandbox, host):
    base = any_sandbox.scratch
    any_sandbox.exec(f"mkdir -p {base}/real && echo in > {base}/real/f && ln -s real {base}/alias")
    any_sandbox.copy_out(f"{base}/alias", host / "out")
    assert (host / "out").is_dir() and (host / "out" / "f").read_text() == "in\n"


def test_copy_errors_are_one_line(any_sandbox, host, tmp_path):
    with pytest.raises(CopyError, match="no such file or folder") as e:
        any_sandbox.copy_out(f"{any_sandbox.scratch}/missing", host / "out")
    assert "\n" not in str(e.value)
    with pytest.raises(CopyError, match="inside the sandbox's workspace"):
        any_sandbox.copy_out("/testbed", any_sandbox.workspace / "copy")
    any_sandbox.exec(f"mkdir -p {any_sandbox.scratch}/d")
    (host / "out").mkdir()
    with pytest.raises(CopyError, match="exists; pass overwrite=True"):
        any_sandbox.copy_out(f"{any_sandbox.scratch}/d", host / "out")
    with pytest.raises(CopyError, match="no such file or folder on the host"):
        any_sandbox.copy_in(tmp_path / "nope", f"{any_sandbox.scratch}/nope")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(CopyError, match="is a fifo"):
        any_sandbox.copy_in(tmp_path / "fifo", f"{any_sandbox.scratch}/fifo")


def test_local_copy_in_never_writes_through_a_workspace_link(tmp_path, host):
    from loopcoder.runtime.local_sandbox import LocalSandbox

    ws = tmp_path / "ws"
    ws.mkdir()
    os.symlink(host / "canary", ws / "out-link")
    src = tmp_path / "f"
    src.write_text("pwned")
    before = snapshot(host)
    with pytest.warns(UserWarning), LocalSandbox(ws, allow=True) as sb:
        with pytest.raises(CopyError, match="not a folder"):
            sb.copy_in(src, "/testbed/out-link/victim")
        with pytest.raises(CopyError, match="only reaches files inside the workspace"):
            sb.copy_in(src, "/testbed/../escape")
        with pytest.raises(CopyError, match="only reaches files inside the workspace"):
            sb.copy_out("/etc/hostname", tmp_path / "h")
        # The link itself is replaced by the copy (as the engine does), never followed.
        sb.copy_in(src, "/testbed/out-link")
    assert (ws / "out-link").read_text() == "pwned" and not (ws / "out-link").is_symlink()
    assert snapshot(host) == before


@pytest.mark.docker
def test_docker_copy_out_never_creates_the_containers_devices(sandbox, host):
    before = snapshot(host)
    result = sandbox.copy_out("/dev", host / "out")
    skipped = {s.path: s.reason for s in result.skipped}
    assert skipped["null"] == skipped["zero"] == "character device not copied"
    assert skipped["stdout"].startswith("symlink to '/proc/self/fd/1' is absolute")
    assert snapshot(host) == before
    assert_confined(host / "out")


@pytest.mark.docker
def test_docker_copy_in_sets_owner_and_reaches_root_only_paths(sandbox, tmp_path):
    src = tmp_path / "tool.sh"
    src.write_text("#!/bin/sh\necho tool\n")
    src.chmod(0o755)
    sandbox.copy_in(src, "/opt/tools/bin/tool.sh")  # /opt/tools is missing and root-owned /opt is not writable
    res = sandbox.exec("stat -c '%u:%g %a' /opt/tools /opt/tools/bin /opt/tools/bin/tool.sh; /opt/tools/bin/tool.sh")
    assert res.output == (f"{sandbox.uid}:{sandbox.gid} 755\n" * 2) + f"{sandbox.uid}:{sandbox.gid} 755\ntool\n"
