"""What changed in the input root since the last look: new, changed, unchanged and removed sources.

The input root holds one folder per source. A source's fingerprint hashes every file's relative
path, size and modification time (nanoseconds): cheap enough to take every few seconds over
thousands of files, and it changes whenever a file is added, removed, replaced or edited.
Contents are not read, so a `touch` counts as a change; that costs one re-run of the source,
never a missed update.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path


def list_source_folders(input_root: str | Path) -> list[str]:
    """Sub-folders of the input root (hidden ones excluded), sorted: one per source."""
    root = Path(input_root).expanduser()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def source_fingerprint(folder: str | Path) -> str:
    """Hash of (relative path, size, mtime_ns) of every file under `folder`, recursively.

    Covers the same files `emerge.ingest.read_source` reads, so a change the fingerprint does
    not see cannot change `raw_texts` either.
    """
    from emerge.ingest import source_files

    folder = Path(folder)
    digest = hashlib.sha256()
    files, _ = source_files(folder)  # links followed as the reader follows them
    for rel, path in files:
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed while we listed: the next look sees the new state
            continue
        digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


@dataclass
class InboxChanges:
    """One look at the input root compared with the fingerprints seen last time."""

    fingerprints: dict[str, str]                         # every source on disk now
    new: list[str] = field(default_factory=list)         # on disk, never seen before
    changed: list[str] = field(default_factory=list)     # seen before, files differ now
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)     # known before, folder gone now

    @property
    def to_run(self) -> list[str]:
        return sorted(self.new + self.changed)


def scan_inbox(input_root: str | Path, previous: dict[str, str], known: set[str] | frozenset = frozenset()) -> \
        InboxChanges:
    """Compare the input root with `previous` fingerprints.

    `known` adds sources registered elsewhere (e.g. Dagster partitions) whose folder is gone, so
    a removal is reported even when `previous` never saw the folder.
    """
    root = Path(input_root).expanduser()
    now = {s: source_fingerprint(root / s) for s in list_source_folders(root)}
    changes = InboxChanges(fingerprints=now)
    for source, fp in now.items():
        if source not in previous:
            changes.new.append(source)
        elif previous[source] != fp:
            changes.changed.append(source)
        else:
            changes.unchanged.append(source)
    changes.removed = sorted((set(previous) | set(known)) - set(now))
    return changes
