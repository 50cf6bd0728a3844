"""Compile UMAP's numba kernels once per machine, not once per process.

umap-learn jit-compiles several kernels without numba's `cache=True` (`smooth_knn_dist`,
`compute_membership_strengths`, the layout epoch, ...), so every new Python process pays their
compilation before it fits or projects anything: ~6 s for `smooth_knn_dist` alone on a 2-core CPU,
for a 20-document partition as for a million spans. Dagster's multiprocess executor starts one
process per step and partition, so a `span_clusters` backfill over N sources paid it N times.
pynndescent already caches its kernels; this turns numba's on-disk cache on for umap's
(`Dispatcher.enable_caching`, numba's own switch), so later processes load the compiled code from
`NUMBA_CACHE_DIR` (Emerge's home sets it) or numba's default location. The cache is keyed by
source file, signature and CPU, so a changed umap or another machine recompiles; where no cache
location is writable the kernels compile in memory as before.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_UMAP_KERNEL_MODULES = ("umap.umap_", "umap.layouts", "umap.utils", "umap.spectral", "umap.distances",
                        "umap.sparse")
_enabled: list[str] | None = None


def cache_umap_kernels() -> list[str]:
    """Turn on numba's disk cache for umap's uncached kernels (idempotent); returns their names."""
    global _enabled
    if _enabled is not None:
        return _enabled
    import importlib

    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    enabled: list[str] = []
    for name in _UMAP_KERNEL_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr, kernel in vars(module).items():
            if not isinstance(kernel, Dispatcher) or not isinstance(getattr(kernel, "_cache", None), NullCache):
                continue
            try:
                kernel.enable_caching()
            except RuntimeError as exc:  # no writable cache location: compile in memory as umap does
                log.debug("numba cannot cache %s.%s: %s", name, attr, exc)
                continue
            enabled.append(f"{name}.{attr}")
    _enabled = enabled
    return enabled
