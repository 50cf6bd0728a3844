"""What every benchmark script shares: machine facts and the JSON result contract."""

import json
import os
import platform
import sys
from pathlib import Path


def machine() -> dict:
    import torch

    return {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
            "cpus": os.cpu_count(), "cpu_flags": cpu_flags(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "libraries": library_versions()}


def library_versions() -> dict:
    """Versions of the libraries whose numerics a benchmark's numbers depend on (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("transformers", "sentence-transformers", "numpy", "scikit-learn", "umap-learn", "hdbscan",
                 "polars", "bm25s", "bertopic"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def cpu_flags() -> list[str]:
    """The vector-instruction flags that decide the forward pass' speed (bf16 autocast needs avx512_bf16/amx)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in set(flags) if f.startswith(("avx", "amx", "fma")))


def jsonl_rows(path: str | Path, limit: int | None = None) -> list[dict]:
    """The first `limit` records of a JSONL file. Split on "\n" only: str.splitlines() also
    splits on U+2028, \x0c, ... that occur inside JSON strings."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]
    return rows if limit is None else rows[:limit]


def add_corpus_arguments(parser, label_required: bool = True, docs_required: bool = True) -> None:
    """The labelled-JSONL options the corpus benchmarks share."""
    parser.add_argument("--docs", required=docs_required, help="JSONL with a text field")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--label-field", required=label_required, default=None)
    parser.add_argument("--limit", type=int, default=None, help="the first N records")
    parser.add_argument("--seed", type=int, default=42)


def add_model_argument(parser) -> None:
    """`--model`: the base model these benchmarks encode and fine-tune (the smoke tests pass a tiny
    random BERT, so that they check the contract in seconds)."""
    parser.add_argument("--model", default=None, help="base model directory (default: packaged all-MiniLM-L6-v2)")


def write_result(result: dict, out: str | None) -> None:
    """Write the result to `out` (pretty), if given."""
    if out:
        Path(out).write_text(json.dumps(result, indent=2))


def emit(result: dict, out: str | None) -> int:
    """Write the result to `out` (pretty) and print it as the last stdout line (one line)."""
    write_result(result, out)
    print(json.dumps(result), flush=True)
    return 0


def warm_up_numba(seed: int = 0) -> None:
    """Compile UMAP's and HDBSCAN's numba kernels before anything is timed."""
    import hdbscan
    import numpy as np
    from umap import UMAP

    from emerge.discovery.umap_kernels import cache_umap_kernels

    cache_umap_kernels()  # a later process loads them instead of compiling them again
    x = np.random.default_rng(seed).normal(size=(300, 16)).astype(np.float32)
    coords = UMAP(n_components=5, metric="cosine", random_state=seed).fit_transform(x)
    hdbscan.HDBSCAN(min_cluster_size=10, prediction_data=True).fit(coords)


def code_digest(skip: tuple[str, ...] = (), root: Path | None = None) -> str:
    """Hash of the engine's source, less the subpackages in `skip` (a stage that never imports them):
    a cached stage result is reused only by the code that made it."""
    import hashlib

    root = root or Path(__file__).resolve().parents[1] / "emerge"
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        if f.relative_to(root).parts[0] in skip:
            continue
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def cached_stage(cache: str | Path | None, name: str, key: dict, compute, dump, load, reused: list,
                 code_skip: tuple[str, ...] = ()):
    """`compute()`, or its earlier result from `cache` when the stage's inputs (`key`, plus the
    engine's code) are the same: for deterministic stages only (a base evaluation, a curation), so
    that a training experiment does not redo half an hour of them. `dump(value, folder)` and
    `load(folder)` store the value; the stage's name goes to `reused` when it was not recomputed.
    `code_skip`: engine subpackages the stage never runs (`code_digest`), whose edits keep its cache."""
    import hashlib

    if cache is None:
        return compute()
    digest = hashlib.sha256(json.dumps(key | {"code": code_digest(code_skip)}, sort_keys=True, default=str)
                            .encode()).hexdigest()[:16]
    folder = Path(cache) / f"{name}-{digest}"
    if (folder / "complete").exists():
        print(f"{name}: reusing {folder}", file=sys.stderr, flush=True)
        reused.append(name)
        return load(folder)
    value = compute()
    folder.mkdir(parents=True, exist_ok=True)
    dump(value, folder)
    (folder / "key.json").write_text(json.dumps(key, sort_keys=True, default=str, indent=1))
    (folder / "complete").touch()
    return value
