"""Atomic file writes: a crash or a full disk never leaves a half-written checkpoint or split file behind.

Each writer fills a temporary file in the destination's folder (so the final rename stays on one file system),
flushes it to disk and then ``os.replace``-s it over the destination, which is atomic on POSIX and Windows.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file and move it to ``path`` once complete. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON at ``path``, written atomically."""
    data = (json.dumps(obj, indent=1) + "\n").encode()
    return atomic_write(path, lambda f: f.write(data))


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path``, written atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
