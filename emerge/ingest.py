"""Read a source folder of raw files into documents, accounting for every input.

Every file and every record ends up either as a document or as a skip with a reason, so a
user can always answer "where did my document go?" from the run metadata.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from emerge.config import IngestConfig
from emerge.errors import InputError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
TABLE_SUFFIXES = {".jsonl", ".csv", ".parquet"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | TABLE_SUFFIXES

DOC_SCHEMA = {"doc_id": pl.String, "source": pl.String, "path": pl.String, "record": pl.String,
              "text": pl.String, "n_chars": pl.Int64}
SKIP_SCHEMA = {"source": pl.String, "path": pl.String, "record": pl.String, "reason": pl.String,
               "detail": pl.String}


@dataclass
class IngestResult:
    """Documents read from one source plus one row per input that was not kept."""

    documents: pl.DataFrame
    skipped: pl.DataFrame

    @property
    def skip_counts(self) -> dict[str, int]:
        if self.skipped.is_empty():
            return {}
        counts = self.skipped.group_by("reason").len().sort("reason")
        return dict(zip(counts["reason"].to_list(), counts["len"].to_list()))

    @property
    def n_inputs(self) -> int:
        return self.documents.height + self.skipped.height


def stable_doc_id(source: str, path: str, record: str) -> str:
    """Same file, same record -> same id across runs and machines (content can change; the id
    names the place, which is what provenance needs)."""
    return hashlib.sha1(f"{source}\x1f{path}\x1f{record}".encode()).hexdigest()[:16]


def normalise_text(text: str, form: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize(form, text)


class _Collector:
    def __init__(self, source: str, config: IngestConfig):
        self.source, self.config = source, config
        self.docs: list[dict] = []
        self.skips: list[dict] = []
        self._seen_content: dict[str, str] = {}
        self._seen_ids: set[str] = set()

    def skip(self, path: str, record: str, reason: str, detail: str = "") -> None:
        log.warning("skip %s/%s%s: %s %s", self.source, path, f"#{record}" if record else "", reason, detail)
        self.skips.append({"source": self.source, "path": path, "record": record, "reason": reason,
                           "detail": detail[:300]})

    def add(self, path: str, record: str, text) -> None:
        if not isinstance(text, str):
            self.skip(path, record, "invalid_text_type", f"expected a string, got {type(text).__name__}")
            return
        text = normalise_text(text, self.config.normalization)
        if len(text.strip()) < self.config.min_doc_chars:
            self.skip(path, record, "empty", "no text after normalisation")
            return
        if len(text) > self.config.max_doc_chars:
            self.skip(path, record, "too_long",
                      f"{len(text):,} chars > max_doc_chars={self.config.max_doc_chars:,}")
            return
        doc_id = stable_doc_id(self.source, path, record)
        if doc_id in self._seen_ids:
            self.skip(path, record, "duplicate_id", f"id {record!r} appears twice in {path}")
            return
        if self.config.deduplicate:
            digest = hashlib.sha1(text.encode()).hexdigest()
            first = self._seen_content.get(digest)
            if first is not None:
                self.skip(path, record, "duplicate", f"same text as doc_id {first}")
                return
            self._seen_content[digest] = doc_id
        self._seen_ids.add(doc_id)
        self.docs.append({"doc_id": doc_id, "source": self.source, "path": path, "record": record,
                          "text": text, "n_chars": len(text)})


def _decode(raw: bytes) -> str:
    if b"\x00" in raw[:8192]:
        raise _BinaryFile()
    return raw.decode("utf-8-sig")


class _BinaryFile(Exception):
    pass


def _read_text_file(col: _Collector, rel: str, raw: bytes) -> None:
    col.add(rel, "", _decode(raw))


def _read_jsonl(col: _Collector, rel: str, raw: bytes) -> None:
    text_field, id_field = col.config.text_field, col.config.id_field
    # split on "\n" only: str.splitlines() would also cut at U+2028, U+0085, ... which JSON
    # allows unescaped inside strings (20 Newsgroups has them)
    for lineno, line in enumerate(_decode(raw).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            col.skip(rel, f"line{lineno}", "malformed_row", f"invalid JSON: {exc.msg}")
            continue
        if not isinstance(row, dict):
            col.skip(rel, f"line{lineno}", "malformed_row", "a JSONL line must hold an object")
            continue
        if text_field not in row:
            col.skip(rel, f"line{lineno}", "missing_text_field", f"no field {text_field!r}")
            continue
        record = str(row[id_field]) if id_field and row.get(id_field) is not None else f"line{lineno}"
        col.add(rel, record, row[text_field])


def _read_csv(col: _Collector, rel: str, raw: bytes) -> None:
    text_field, id_field = col.config.text_field, col.config.id_field
    reader = csv.reader(io.StringIO(_decode(raw), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        col.skip(rel, "", "empty", "CSV file has no header row")
        return
    except csv.Error as exc:
        col.skip(rel, "", "malformed_file", f"unreadable CSV header: {exc}")
        return
    if text_field not in header:
        col.skip(rel, "", "missing_text_field", f"no column {text_field!r} in header {header[:10]}")
        return
    ti = header.index(text_field)
    ii = header.index(id_field) if id_field and id_field in header else None
    rowno = 1
    while True:
        rowno += 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            col.skip(rel, f"row{rowno}", "malformed_row", str(exc))
            continue
        if not row:
            continue
        if len(row) != len(header):
            col.skip(rel, f"row{rowno}", "malformed_row", f"{len(row)} fields, header has {len(header)}")
            continue
        record = row[ii] if ii is not None and row[ii] else f"row{rowno}"
        col.add(rel, record, row[ti])


def _read_parquet(col: _Collector, rel: str, path: Path) -> None:
    import pyarrow.parquet as pq

    text_field, id_field = col.config.text_field, col.config.id_field
    table = pq.read_table(path)
    if text_field not in table.column_names:
        col.skip(rel, "", "missing_text_field", f"no column {text_field!r} in {table.column_names[:10]}")
        return
    texts = table.column(text_field).to_pylist()
    ids = table.column(id_field).to_pylist() if id_field and id_field in table.column_names else None
    for i, text in enumerate(texts):
        record = str(ids[i]) if ids is not None and ids[i] is not None else f"row{i}"
        if text is None:
            col.skip(rel, record, "empty", "null text")
            continue
        col.add(rel, record, text)


def source_files(folder: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, str, str]]]:
    """(relative path, path) of every real file under `folder`, and (path, reason, detail) of
    every entry that cannot be read as one.

    Symlinked folders and files are followed, but each real folder and file is read once: a
    second way to the same place is a `same_folder`/`same_file` skip naming the first, a link
    back into its own ancestors a `symlink_loop`, a dangling link a `broken_link`. Entries come
    in sorted order, so document ids and order are stable."""
    files: list[tuple[str, Path]] = []
    skips: list[tuple[str, str, str]] = []
    seen_dirs: dict[str, str] = {}
    seen_files: dict[str, str] = {}

    def visit(directory: Path, prefix: str, ancestors: frozenset[str]) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            skips.append((prefix.rstrip("/") or ".", "unreadable", str(exc)))
            return
        for entry in entries:
            rel, path = prefix + entry.name, Path(entry.path)
            if entry.is_dir(follow_symlinks=True):
                real = os.path.realpath(path)
                if real in ancestors:
                    skips.append((rel, "symlink_loop", f"links back to {os.readlink(path) if entry.is_symlink() else real}"))
                elif real in seen_dirs:
                    skips.append((rel, "same_folder", f"already read as {seen_dirs[real] or '.'}"))
                else:
                    seen_dirs[real] = rel
                    visit(path, rel + "/", ancestors | {real})
            elif entry.is_file(follow_symlinks=True):
                real = os.path.realpath(path)
                if real in seen_files:
                    skips.append((rel, "same_file", f"already read as {seen_files[real]}"))
                else:
                    seen_files[real] = rel
                    files.append((rel, path))
            elif entry.is_symlink():
                skips.append((rel, "broken_link", f"points to missing {os.readlink(path)}"))
            else:
                skips.append((rel, "not_a_file", "socket, pipe or device"))

    root = os.path.realpath(folder)
    seen_dirs[root] = ""
    visit(folder, "", frozenset({root}))
    return files, skips


def read_source(folder: str | Path, source: str | None = None,
                config: IngestConfig | None = None) -> IngestResult:
    """Read every supported file under `folder` (recursively, links followed once, sorted, so ids
    and order are stable; see `source_files`).

    Raises InputError when the folder does not exist or yields no usable document at all:
    an empty dataset is never what a user meant.
    """
    config = config or IngestConfig()
    folder = Path(folder)
    source = source or folder.name
    if not folder.is_dir():
        raise InputError(f"source {source!r}: folder {str(folder)!r} does not exist")
    col = _Collector(source, config)
    files, unreadable = source_files(folder)
    for rel, reason, detail in unreadable:
        col.skip(rel, "", reason, detail)
    for rel, path in files:
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            col.skip(rel, "", "unsupported_file_type", f"suffix {suffix or '(none)'!r}")
            continue
        try:
            if suffix == ".parquet":
                _read_parquet(col, rel, path)
                continue
            raw = path.read_bytes()
            if suffix in TEXT_SUFFIXES:
                _read_text_file(col, rel, raw)
            elif suffix == ".jsonl":
                _read_jsonl(col, rel, raw)
            else:
                _read_csv(col, rel, raw)
        except _BinaryFile:
            col.skip(rel, "", "binary", "NUL bytes in the first 8 KiB")
        except UnicodeDecodeError as exc:
            col.skip(rel, "", "undecodable", f"not UTF-8 at byte {exc.start}")
        except OSError as exc:
            col.skip(rel, "", "unreadable", str(exc))
        except Exception as exc:  # pyarrow errors on corrupt parquet and the like
            col.skip(rel, "", "malformed_file", f"{type(exc).__name__}: {exc}")
    result = IngestResult(pl.DataFrame(col.docs, schema=DOC_SCHEMA), pl.DataFrame(col.skips, schema=SKIP_SCHEMA))
    if result.documents.is_empty():
        if not files and not unreadable:
            raise InputError(f"source {source!r}: folder {str(folder)!r} contains no files")
        raise InputError(f"source {source!r}: no usable document among {len(files)} file(s); "
                         f"skipped by reason: {result.skip_counts}")
    return result


def preflight_sources(folders: dict[str, Path], config: IngestConfig | None = None) -> tuple[list[str], dict[str, str]]:
    """(sources that yield documents, source -> why not), read before any model work.

    One empty or unusable source must not abort a run after the others were embedded: the
    caller reports each problem once and curates the rest."""
    usable, problems = [], {}
    for source, folder in folders.items():
        try:
            read_source(folder, source=source, config=config)
            usable.append(source)
        except InputError as exc:
            problems[source] = str(exc)
    return usable, problems


def documents_from_texts(texts, source: str = "inline", config: IngestConfig | None = None) -> IngestResult:
    """The Python API's entry: a list of strings becomes documents with the same checks as files."""
    config = config or IngestConfig()
    col = _Collector(source, config)
    for i, text in enumerate(texts):
        col.add("", str(i), text)
    return IngestResult(pl.DataFrame(col.docs, schema=DOC_SCHEMA), pl.DataFrame(col.skips, schema=SKIP_SCHEMA))


INVENTORY_SCHEMA = {**DOC_SCHEMA, "status": pl.String, "reason": pl.String, "detail": pl.String}


def inventory(result: IngestResult) -> pl.DataFrame:
    """One row per input (kept document or skipped file/record), so accounting survives on disk."""
    kept = result.documents.with_columns(pl.lit("kept").alias("status"), pl.lit(None, pl.String).alias("reason"),
                                         pl.lit(None, pl.String).alias("detail"))
    skipped = result.skipped.with_columns(
        pl.struct("source", "path", "record").map_elements(
            lambda r: stable_doc_id(r["source"], r["path"], r["record"]), return_dtype=pl.String).alias("doc_id"),
        pl.lit(None, pl.String).alias("text"), pl.lit(None, pl.Int64).alias("n_chars"),
        pl.lit("skipped").alias("status"))
    return pl.concat([kept.select(list(INVENTORY_SCHEMA)), skipped.select(list(INVENTORY_SCHEMA))]).cast(
        INVENTORY_SCHEMA)


def kept_documents(inventory_frame: pl.DataFrame) -> pl.DataFrame:
    return inventory_frame.filter(pl.col("status") == "kept").select(list(DOC_SCHEMA))


def document_texts(*inventory_frames: pl.DataFrame) -> dict[str, str]:
    """doc_id -> text of the kept documents of one or more `raw_texts` inventories."""
    texts: dict[str, str] = {}
    for frame in inventory_frames:
        docs = kept_documents(frame)
        texts.update(zip(docs["doc_id"].to_list(), docs["text"].to_list()))
    return texts
