"""Atomic file and folder writes: readers see the old version or the new one, never half of one.

A run killed mid-write (OOM, SIGKILL, a pre-empted node) must not leave a truncated Parquet
file or model that the next run would load. Every writer here writes to a temp name in the
target's folder (same filesystem, so the rename is atomic) and renames it into place; on an
exception the temp is removed, so nothing partial remains either.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def _temp_name(path: Path, kind: str) -> Path:
    # Leading dot: listings and globs of the folder skip it; pid + random part: two writers of
    # the same target (two runs of one partition) never share a temp.
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def atomic_write(path: str | Path, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Call `write(tmp)` then rename `tmp` onto `path`; on any exception remove `tmp` and re-raise.

    `suffix` is appended to the temp name for writers that insist on an extension
    (``numpy.savez`` adds ``.npz`` otherwise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path, "tmp").with_suffix(suffix) if suffix else _temp_name(path, "tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_dir(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Build a folder at a temp name with `write(tmp_dir)`, then swap it in for `path`.

    A folder cannot be replaced by one rename, so the old folder is first renamed aside and
    removed after the new one is in place; a crash between the two renames leaves the old
    folder at its `.old-` name, which `recover_dir` puts back on the next write or load.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = _temp_name(path, "tmp")
    try:
        tmp.mkdir()
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = _temp_name(path, "old")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def recover_dir(path: str | Path) -> None:
    """Undo an interrupted `atomic_write_dir` swap: restore the old folder if `path` is missing,
    and remove leftover temp folders of `path`."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    olds = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not path.exists() and olds:
        olds.pop().rename(path)
    # temps of writers that died (another live writer's temp is left alone)
    for leftover in olds + [t for t in path.parent.glob(f".{path.name}.tmp-*") if not _writer_alive(t)]:
        shutil.rmtree(leftover, ignore_errors=True)


def _writer_alive(temp: Path) -> bool:
    try:
        pid = int(temp.name.rsplit(".tmp-", 1)[1].split("-")[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return pid != os.getpid()


def leftover_temps(folder: str | Path) -> list[Path]:
    """Temp files/folders of atomic writes under `folder` (what a killed writer would leave)."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)
