"""Atomic file writes: a crash or a full disk never leaves a half-written checkpoint or split file behind.

Each writer fills a temporary file in the destination's folder (so the final rename stays on one file system),
flushes it to disk and then ``os.replace``-s it over the destination, which is atomic on POSIX and Windows. The
file gets the permissions an ordinary ``open`` would give it (0666 less the umask; ``mkstemp`` alone gives 0600).
A process killed mid-write leaves its temporary behind: :func:`remove_stale_temporaries` clears them, for callers
that know no other writer is live in the folder (e.g. under a :class:`fastral._lock.FolderLock`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0o022)  # os.umask can only be read by setting it: put the process's value straight back
os.umask(_UMASK)
TEMPORARY_GLOB = ".*.tmp"  # the names mkstemp gives below: .<destination name>.<random>.tmp


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file and move it to ``path`` once complete. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries that killed writers left in ``folder``; returns them. Only while no writer is live."""
    stale = [p for p in Path(folder).glob(TEMPORARY_GLOB) if p.is_file() and p.name.count(".") >= 3]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON at ``path``, written atomically."""
    data = (json.dumps(obj, indent=1) + "\n").encode()
    return atomic_write(path, lambda f: f.write(data))


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path``, written atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
