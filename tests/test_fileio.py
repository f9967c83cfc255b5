"""The one writer: atomic, no replacement without overwrite, never another kind, locked, stale-safe."""

import errno
import logging
import os
import stat
import subprocess
import sys
import time

import pytest

from ood_flow.errors import OutputError
from ood_flow.fileio import (PNG, Kind, atomic_write, check_output, clean_stale_temporaries, file_lock, lock_path,
                             temp_path)

ANY = Kind("a test file", lambda p: p.read_bytes().startswith(b"ours"))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_new_file_appears_whole_with_the_usual_permissions(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"new")
        assert not target.exists() and tmp.parent == tmp_path
        assert tmp.name.startswith(".out.bin.oodflow-") and str(os.getpid()) in tmp.name
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_a_failure_keeps_the_old_file_and_its_mode(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"ours old")
    target.chmod(0o640)
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target, overwrite=True, kind=ANY) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"ours old" and os.listdir(tmp_path) == ["out.bin"]
    with atomic_write(target, overwrite=True, kind=ANY) as tmp:
        tmp.write_bytes(b"ours new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.read_bytes() == b"ours new"


def test_an_existing_file_is_replaced_only_with_overwrite(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"ours")
    with pytest.raises(FileExistsError, match=f"{target} exists; pass overwrite=True"):  # Python's words
        with atomic_write(target, kind=ANY) as tmp:
            tmp.write_bytes(b"never")
    assert target.read_bytes() == b"ours"
    with atomic_write(target, kind=ANY, replaceable=True) as tmp:  # e.g. a group added to a score file
        tmp.write_bytes(b"ours, updated")
    assert target.read_bytes() == b"ours, updated"


def test_a_file_of_another_kind_is_never_replaced(tmp_path):
    scores = tmp_path / "scores.h5"
    scores.write_bytes(b"\x89HDF\r\n\x1a\nnot a picture")
    before = scores.read_bytes()
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="is not a PNG image; refusing to replace it"):
            with atomic_write(scores, overwrite=overwrite, kind=PNG) as tmp:
                tmp.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert scores.read_bytes() == before and os.listdir(tmp_path) == ["scores.h5"]


def test_folders_devices_and_missing_folders_are_refused_before_any_work(tmp_path):
    with pytest.raises(OutputError, match="is a folder"):
        check_output(tmp_path, overwrite=True)
    with pytest.raises(OutputError, match="not a regular file"):
        check_output("/dev/null", overwrite=True)
    with pytest.raises(OutputError, match="no such folder"):
        check_output(tmp_path / "missing" / "x.png")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OutputError, match="not a regular file"):
        check_output(tmp_path / "fifo", overwrite=True)


def test_names_up_to_the_file_system_limit_work_and_longer_ones_fail_clearly(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    for name in ("a" * (limit - 3) + ".h5", "é" * ((limit - 4) // 2) + ".pt"):
        target = tmp_path / name
        assert len(os.fsencode(temp_path(target).name)) <= limit
        assert len(os.fsencode(lock_path(target).name)) <= limit
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"x")
        assert target.read_bytes() == b"x"
    with pytest.raises(OutputError, match="file name too long"):
        check_output(tmp_path / ("b" * (limit + 1)))


def test_write_errors_name_the_users_file_not_the_temporary(tmp_path):
    target = tmp_path / "model.pt"
    for exc in (lambda tmp: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp)),
                lambda tmp: RuntimeError(f"[enforce fail] file write failed for {tmp}")):
        with pytest.raises(OutputError) as info:
            with atomic_write(target) as tmp:
                raise exc(tmp)
        assert str(target) in str(info.value) and ".tmp" not in str(info.value) and "oodflow-" not in str(info.value)
    assert os.listdir(tmp_path) == []


def test_stale_temporaries_of_a_gone_writer_are_removed_and_reported(tmp_path, caplog):
    target = tmp_path / "scores.h5"
    dead, alive = _dead_pid(), os.getppid()
    stale = tmp_path / f".scores.h5.oodflow-{dead}-0123abcd.tmp"
    live = tmp_path / f".scores.h5.oodflow-{alive}-0123abcd.tmp"
    foreign = [tmp_path / ".scores.h5.backup.tmp", tmp_path / f".other.h5.oodflow-{dead}-0123abcd.tmp"]
    for path in (stale, live, *foreign):
        path.write_bytes(b"x" * 10)
    with caplog.at_level(logging.WARNING, logger="ood_flow"):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"new")
    assert not stale.exists() and live.exists() and all(p.exists() for p in foreign)
    assert any(stale.name in r.getMessage() and str(dead) in r.getMessage() for r in caplog.records)
    assert clean_stale_temporaries(target) == []


_HOLD = """
import sys, time
from ood_flow.fileio import file_lock
with file_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(path, seconds):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_the_lock_excludes_other_processes_and_names_the_holder(tmp_path):
    target = tmp_path / "scores.h5"
    start = time.monotonic()
    proc = _holder(target, 2.0)
    try:
        with pytest.raises(OutputError, match=f"being written by process {proc.pid}"):
            with file_lock(target, timeout=0):
                pass
        with file_lock(target, timeout=60):  # waits for the holder's two seconds
            assert time.monotonic() - start > 2.0
    finally:
        proc.wait()
    assert not lock_path(target).exists()


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    target = tmp_path / "model.pt"
    proc = _holder(target, 60)
    proc.kill()
    proc.wait()
    with file_lock(target, timeout=0):  # the kernel released it with the process
        with file_lock(target, timeout=0):  # re-entrant within this thread
            pass
