"""Atomic writes honour the umask and leave no temporaries; an output folder's lock admits one live process."""

import os
import subprocess
import sys
import textwrap

import pytest

from fastral._atomic import remove_stale_temporaries, write_json
from fastral._lock import FolderBusyError, FolderLock


def test_atomic_writes_get_the_permissions_of_an_ordinary_open(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = write_json(tmp_path / "results.json", {"a": 1})
    with open(tmp_path / "plain.txt", "w"):
        pass
    assert path.stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt", "results.json"]  # no temporary left


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    stale = [tmp_path / ".run_state.pt.k2j3h4g5.tmp", tmp_path / ".results.json.abcdefgh.tmp"]
    kept = [tmp_path / "run_state.pt", tmp_path / "notes.tmp", tmp_path / ".fastral.lock"]
    for p in stale + kept:
        p.write_bytes(b"x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_a_folder_lock_admits_one_process_and_dies_with_it(tmp_path):
    script = textwrap.dedent(f"""
        import time
        from fastral._lock import FolderLock
        with FolderLock({str(tmp_path)!r}):
            print("held", flush=True)
            time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusyError, match=rf"in use by another running process \(pid {holder.pid}\)"):
            FolderLock(tmp_path).acquire()
    finally:
        holder.kill()  # kill -9: the kernel releases the lock
        holder.wait()
        holder.stdout.close()
    with FolderLock(tmp_path) as lock:
        assert (tmp_path / ".fastral.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(FolderBusyError):  # also against a second holder in this process
            FolderLock(tmp_path).acquire()
    lock.release()  # releasing twice is harmless
