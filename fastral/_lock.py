"""An exclusive lock on an output folder that dies with its process: two runs never write one ``--out``.

``fcntl.flock`` on ``<folder>/.fastral.lock``: the kernel drops the lock when the holder exits, is killed or
crashes, so a stale lock file never blocks a later run (the file itself stays, holding the last holder's pid).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = ".fastral.lock"


class FolderBusyError(RuntimeError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """``with FolderLock(folder):`` (or :meth:`acquire` / :meth:`release`) holds the folder's lock, or raises
    :class:`FolderBusyError` at once; creating the folder can raise OSError."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderBusyError(f"'{self.path.parent}' is in use by another running process (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
