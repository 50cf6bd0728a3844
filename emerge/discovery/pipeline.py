"""UMAP + HDBSCAN topic discovery that can be saved and applied to new spans without refitting."""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl

from emerge.atomic import atomic_write_dir, recover_dir
from emerge.discovery.cluster_ids import DEFAULT_MIN_SIMILARITY, IdAssignment, match_cluster_ids
from emerge.config import ClusteringConfig
from emerge.embedding import require_aligned
from emerge.errors import InputError
from emerge.frames import owning_strings
from emerge.vectors import l2_normalise

log = logging.getLogger(__name__)

NOISE = -1
_MIN_FIT_POINTS = 10


def select_fit_sample(spans: pl.DataFrame, config: ClusteringConfig) -> np.ndarray:
    """Row positions of the spans the clustering is fitted on.

    Per document: the longest spans that tile it without overlap (at most
    `max_fit_spans_per_doc`, evenly spread), so one long document cannot form a dense blob of
    near-identical overlapping spans; then a seeded uniform cap at `max_fit_spans`.
    """
    return _cap_sample(_document_tiles(spans, config.max_fit_spans_per_doc), config)


def _document_tiles(spans: pl.DataFrame, k: int) -> np.ndarray:
    """Each document's (at most `k`) longest non-overlapping spans, as sorted row positions."""
    if spans.height == 0:
        return np.empty(0, np.int64)
    frame = spans.select("doc_id", "tok_start", "tok_end", "n_tokens").with_row_index("_row")
    frame = frame.sort(["doc_id", "n_tokens", "tok_start"], descending=[False, True, False])
    chosen: list[int] = []
    for rows, starts, ends in frame.group_by("doc_id", maintain_order=True).agg(
            "_row", "tok_start", "tok_end").select("_row", "tok_start", "tok_end").iter_rows():
        tiles, taken = [], []
        for row, s, e in zip(rows, starts, ends):
            if all(e <= a or s >= b for a, b in taken):
                taken.append((s, e))
                tiles.append((e - s, s, row))
        longest = max(t[0] for t in tiles)
        primary = sorted((s, row) for n, s, row in tiles if n == longest)
        if len(primary) > k:  # spread over the document
            picked = [primary[i] for i in np.linspace(0, len(primary) - 1, k).round().astype(int)]
        else:  # fill with the longest of the shorter gap-fillers
            fillers = sorted((t for t in tiles if t[0] < longest), key=lambda t: (-t[0], t[1]))
            picked = primary + [(s, row) for _, s, row in fillers[:k - len(primary)]]
        chosen.extend(row for _, row in picked)
    return np.array(sorted(chosen), dtype=np.int64)


def _cap_sample(chosen: np.ndarray, config: ClusteringConfig) -> np.ndarray:
    if len(chosen) > config.max_fit_spans:
        rng = np.random.default_rng(config.random_state)
        chosen = np.sort(rng.choice(chosen, config.max_fit_spans, replace=False))
    return chosen


_TILE_COLUMNS = ("doc_id", "tok_start", "tok_end", "n_tokens")


def load_fit_sample(sources: dict[str, tuple[pl.DataFrame | pl.LazyFrame, pl.DataFrame | pl.LazyFrame]],
                    config: ClusteringConfig) -> tuple[pl.DataFrame, np.ndarray, int]:
    """`select_fit_sample` over many sources without holding their spans or vectors at once.

    `sources` maps a source name to (spans, span embeddings), eager or lazy (scans of the assets'
    files). Each source's document tiles are found from four small columns; the cap draws from
    the tiles of all sources (so each source contributes in proportion to its tiles), and then
    only the drawn rows' texts and vectors are read. The sample equals `select_fit_sample` on the
    sources concatenated in sorted order. Returns (source, span_idx, doc_id, text_span of the
    sample; its float32 vectors; the number of spans seen)."""
    names = sorted(sources)
    offsets, tiles, total = [], [], 0
    for name in names:
        spans, embeddings = sources[name]
        require_aligned(name, spans, embeddings)  # every source, drawn from or not, as before streaming
        meta = spans.lazy().select(*_TILE_COLUMNS).collect()
        tiles.append(_document_tiles(meta, config.max_fit_spans_per_doc) + total)
        offsets.append(total)
        total += meta.height
    sample = _cap_sample(np.concatenate(tiles) if tiles else np.empty(0, np.int64), config)
    frames, vectors = [], []
    for name, lo, hi in zip(names, offsets, offsets[1:] + [total]):
        rows = sample[(sample >= lo) & (sample < hi)] - lo
        if not len(rows):
            continue
        spans, embeddings = (f.lazy() for f in sources[name])
        wanted = pl.col("_row").is_in(pl.Series(rows, dtype=pl.UInt32).implode())
        frame = owning_strings(spans.with_row_index("_row").filter(wanted)
                               .select("source", "span_idx", "doc_id", "text_span").collect())
        vecs = embeddings.with_row_index("_row").filter(wanted).select("embedding").collect()
        frames.append(frame)
        vectors.append(np.asarray(vecs["embedding"].to_numpy(), np.float32))
    if not frames:
        return (pl.DataFrame(schema={"source": pl.String, "span_idx": pl.Int64, "doc_id": pl.String,
                                     "text_span": pl.String}), np.zeros((0, 0), np.float32), total)
    return pl.concat(frames), np.concatenate(vectors), total


class ClusteringPipeline:
    """A fitted UMAP reducer + HDBSCAN clusterer + per-cluster centroids and titles.

    `predict` places new span vectors in UMAP space (see `project`) and labels them with
    `approximate_predict` (hdbscan's, vectorised),
    which is how new partitions are labelled between refits.

    Cluster ids are *stable ids*: `label_map` translates HDBSCAN's raw labels of this fit, and
    `assign_stable_ids` sets it so a refit keeps the previous fit's ids for the same topics
    (see `emerge.discovery.cluster_ids`). `next_cluster_id` is the smallest id no fit has used yet.
    """

    def __init__(self, config: ClusteringConfig | None = None):
        self.config = config or ClusteringConfig()
        self.reducer = None
        self.clusterer = None
        self.centroids: dict[int, np.ndarray] = {}
        self.sizes: dict[int, int] = {}
        self.titles: dict[int, str] = {}
        self.keyphrases: dict[int, list[str]] = {}
        self.fit_labels_: np.ndarray | None = None
        self.fit_embedding_: np.ndarray | None = None
        self.fit_strengths_: np.ndarray | None = None
        self.size_cap_: int = 0  # max_cluster_size of the refit when max_cluster_fraction triggered, else 0
        self.label_map: dict[int, int] = {}
        self.next_cluster_id: int = 0
        self.id_assignment: IdAssignment | None = None
        self._cosine_index = None  # the fit spans as a CosineIndex, built on first use (see _index)
        self._cosine_index_of = None

    @property
    def cluster_ids(self) -> list[int]:
        return sorted(self.centroids)

    @property
    def is_fitted(self) -> bool:
        return self.reducer is not None and self.clusterer is not None

    def fit(self, vectors: np.ndarray) -> "ClusteringPipeline":
        """Fit UMAP then HDBSCAN on `vectors` (the fit sample, not every dense span)."""
        vectors = _check_vectors(vectors).astype(np.float32, copy=False)
        self.fit_reducer(vectors)
        return self.fit_clusterer(vectors)

    def fit_reducer(self, vectors: np.ndarray) -> "ClusteringPipeline":
        import umap

        from emerge.discovery.umap_kernels import cache_umap_kernels

        cache_umap_kernels()

        vectors = _check_vectors(vectors).astype(np.float32, copy=False)
        n = len(vectors)
        if n < _MIN_FIT_POINTS:
            raise InputError(f"clustering needs at least {_MIN_FIT_POINTS} spans to fit, got {n}; "
                             "add documents or lower min_len")
        cfg = self.config
        n_neighbors = min(cfg.n_neighbors, n - 1)
        n_components = min(cfg.n_components, n - 2)
        precomputed = (None, None, None)
        if cfg.metric == "cosine" and cfg.transform != "umap":  # UMAP.transform needs its own NN index
            from emerge.discovery.knn import knn_graph

            precomputed = knn_graph(vectors, n_neighbors)
        self.reducer = umap.UMAP(n_neighbors=n_neighbors, n_components=n_components, min_dist=cfg.min_dist,
                                 metric=cfg.metric, random_state=cfg.random_state, precomputed_knn=precomputed,
                                 init="spectral" if n > 3 * n_components + 10 else "random")
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*knn_search_index.*")
            warnings.filterwarnings("ignore", message=".*n_jobs value.*")
            self.fit_embedding_ = self.reducer.fit_transform(vectors).astype(np.float32)
        log.info("UMAP fit on %d spans (%d -> %d dimensions) in %.1f s", n, vectors.shape[1], n_components,
                 time.perf_counter() - started)
        return self

    @classmethod
    def from_reducer(cls, projected: "ClusteringPipeline", config: ClusteringConfig | None = None) -> "ClusteringPipeline":
        """A new pipeline on `projected`'s fitted UMAP (and its fit coordinates), with `config`'s
        HDBSCAN settings, ready for `fit_clusterer`: a refit of the clusters never re-runs UMAP."""
        if projected.reducer is None:
            raise RuntimeError("the projected pipeline has no fitted UMAP (fit_reducer first)")
        pipeline = cls(config or projected.config)
        pipeline.reducer, pipeline.fit_embedding_ = projected.reducer, projected.fit_embedding_
        return pipeline

    def fit_clusterer(self, vectors: np.ndarray, coords: np.ndarray | None = None) -> "ClusteringPipeline":
        """HDBSCAN on the UMAP coordinates of the fit sample; `vectors` give the centroids."""
        import hdbscan

        if self.reducer is None:
            raise RuntimeError("fit_reducer() must run before fit_clusterer()")
        vectors = _check_vectors(vectors).astype(np.float32, copy=False)
        coords = self.fit_embedding_ if coords is None else np.asarray(coords, np.float32)
        if coords is None or len(coords) != len(vectors):
            raise ValueError("coords must be the UMAP coordinates of exactly these vectors")
        self.fit_embedding_ = coords
        n = len(vectors)
        min_cluster_size = min(self.config.auto_min_cluster_size(n), max(2, n // 2))

        def fit(max_cluster_size: int = 0):
            return hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=self.config.min_samples,
                                   max_cluster_size=max_cluster_size, prediction_data=True,
                                   core_dist_n_jobs=1).fit(coords)

        started = time.perf_counter()
        self.clusterer, self.size_cap_ = fit(), 0
        cap = _size_cap(self.clusterer, self.config.max_cluster_fraction, min_cluster_size)
        if cap:
            self._apply_size_cap(fit(cap), cap)
        self.fit_labels_ = self.clusterer.labels_.astype(np.int64)
        self.fit_strengths_ = self.clusterer.probabilities_.astype(np.float32)
        self._set_centroids(vectors, self.fit_labels_)
        self.label_map = {c: c for c in self.centroids}  # raw labels until assign_stable_ids
        self.next_cluster_id = len(self.centroids)
        self.id_assignment = None
        log.info("HDBSCAN fit on %d spans in %.1f s: %d clusters, %.1f%% noise", n, time.perf_counter() - started,
                 len(self.centroids), 100 * float(np.mean(self.fit_labels_ == NOISE)))
        return self

    def _apply_size_cap(self, capped, cap: int) -> None:
        """Take `capped` (HDBSCAN refit with max_cluster_size `cap`) when the clusters it selects
        below the oversized ones keep at least half of their spans. Otherwise what lies below is
        fluctuation, not topics (one dense blob: splitting it would turn most of it into noise),
        and the large cluster stays."""
        labels = self.clusterer.labels_
        sizes = np.bincount(labels[labels >= 0])
        oversized = np.isin(labels, np.flatnonzero(sizes > cap))
        kept = float((capped.labels_[oversized] >= 0).mean())
        n, largest = len(labels), int(sizes.max())
        if kept >= 0.5:
            self.clusterer, self.size_cap_ = capped, cap
            log.info("one cluster held %d of %d fit spans (over max_cluster_fraction %s): re-selected the "
                     "clusters below it, which keep %.0f%% of its spans", largest, n,
                     self.config.max_cluster_fraction, 100 * kept)
        else:
            log.warning("one cluster holds %d of %d fit spans (over max_cluster_fraction %s), but the clusters "
                        "below it keep only %.0f%% of its spans: kept it whole", largest, n,
                        self.config.max_cluster_fraction, 100 * kept)

    def _set_centroids(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        self.centroids, self.sizes = {}, {}
        for c in np.unique(labels[labels != NOISE]).tolist():
            members = vectors[labels == c]
            mean = members.mean(axis=0)
            self.centroids[int(c)] = l2_normalise(mean)
            self.sizes[int(c)] = int(len(members))

    def assign_stable_ids(self, previous: "ClusteringPipeline | None" = None,
                          min_similarity: float = DEFAULT_MIN_SIMILARITY) -> IdAssignment:
        """Renumber this fit's clusters to match `previous` (call once, right after fitting).

        Centroids, sizes, titles, keyphrases and `fit_labels_` are renumbered; `predict`
        translates HDBSCAN's raw labels through `label_map` from now on.
        """
        if self.clusterer is None:
            raise RuntimeError("assign_stable_ids() needs a fitted clusterer")
        if self.id_assignment is not None:
            raise RuntimeError("stable ids are already assigned for this fit")
        raw_to_stable = match_cluster_ids(
            self.centroids, previous.centroids if previous is not None else None,
            next_id=previous.next_cluster_id if previous is not None else 0, min_similarity=min_similarity)
        m = raw_to_stable.mapping
        self.centroids = {m[c]: v for c, v in self.centroids.items()}
        self.sizes = {m[c]: v for c, v in self.sizes.items()}
        self.titles = {m[c]: v for c, v in self.titles.items() if c in m}
        self.keyphrases = {m[c]: v for c, v in self.keyphrases.items() if c in m}
        if self.fit_labels_ is not None:
            self.fit_labels_ = self._to_stable(self.fit_labels_, m)
        self.label_map = dict(m)
        self.next_cluster_id = raw_to_stable.next_id
        self.id_assignment = raw_to_stable
        return raw_to_stable

    @staticmethod
    def _to_stable(raw: np.ndarray, label_map: dict[int, int]) -> np.ndarray:
        raw = np.asarray(raw, np.int64)
        if not label_map or all(k == v for k, v in label_map.items()):
            return raw
        lut = np.full(max(max(label_map), int(raw.max(initial=NOISE))) + 2, NOISE, np.int64)  # index = raw + 1
        for r, sid in label_map.items():
            lut[r + 1] = sid
        return lut[raw + 1]

    def project(self, vectors: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """UMAP coordinates of new vectors without refitting.

        `transform="knn"` (default): each vector's k nearest fit spans by cosine (`CosineIndex`:
        blocked torch products, bf16 on CPUs that have it), weighted by UMAP's own fuzzy membership (smooth_knn_dist), and the
        weighted mean of their coordinates: what `UMAP.transform` uses as its starting point,
        without its refinement epochs. umap-learn's transform falls back to a per-pair Python
        metric when fitted on < 4,096 points (139 s for 50k spans against 1.7k); this is far
        faster (no per-pair Python metric), and its labels are close to, not equal to, UMAP's.
        `transform="umap"` calls `UMAP.transform` itself.
        """
        if self.reducer is None:
            raise RuntimeError("ClusteringPipeline has no fitted UMAP: call fit() or ClusteringPipeline.load(path)")
        vectors = _check_vectors(vectors)
        n_out = self.reducer.embedding_.shape[1]
        if len(vectors) == 0:
            return np.zeros((0, n_out), np.float32)
        from emerge.discovery.umap_kernels import cache_umap_kernels

        cache_umap_kernels()
        if self.config.transform == "umap" or self.config.metric not in ("cosine", "euclidean"):
            parts = [self.reducer.transform(vectors[lo:lo + batch_size]) for lo in range(0, len(vectors), batch_size)]
            return np.concatenate(parts).astype(np.float32)
        from umap.umap_ import smooth_knn_dist

        index = self._index()
        emb = np.asarray(self.reducer.embedding_, dtype=np.float32)
        k = min(self.reducer.n_neighbors, len(index))
        out = np.empty((len(vectors), n_out), np.float32)
        for lo in range(0, len(vectors), batch_size):
            # unit vectors: the cosine serves both metrics
            idx, sim = index.search(vectors[lo:lo + batch_size], k, refine=False)
            dist = 1.0 - sim if self.config.metric == "cosine" else np.sqrt(np.maximum(2.0 - 2.0 * sim, 0.0))
            sigmas, rhos = smooth_knn_dist(dist.astype(np.float32), float(k), local_connectivity=1.0)
            weights = np.exp(-np.maximum(dist - rhos[:, None], 0.0) / np.maximum(sigmas[:, None], 1e-12))
            out[lo:lo + len(idx)] = (weights[:, :, None] * emb[idx]).sum(axis=1) / weights.sum(axis=1, keepdims=True)
        return out

    def _index(self):
        """The fit spans as a cosine index, built once per fitted/loaded pipeline."""
        from emerge.discovery.knn import CosineIndex

        if self._cosine_index is None or self._cosine_index_of is not self.reducer:
            self._cosine_index = CosineIndex(np.asarray(self.reducer._raw_data, dtype=np.float32))
            self._cosine_index_of = self.reducer
        return self._cosine_index

    def predict(self, vectors: np.ndarray, batch_size: int = 4096,
                progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(cluster labels, membership strengths in [0, 1]) for new span vectors; `progress`
        shows a bar with spans/s (a source can hold millions of dense spans)."""
        from emerge.discovery.hdbscan_predict import approximate_predict

        self._require_fitted()
        if len(vectors) == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        if not self.centroids:
            return np.full(len(vectors), NOISE, np.int64), np.zeros(len(vectors), np.float32)
        labels = np.empty(len(vectors), np.int64)
        strengths = np.empty(len(vectors), np.float32)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(vectors), desc="labelling spans", unit="span", unit_scale=True)
        for lo in range(0, len(vectors), 16 * batch_size):  # bounds approximate_predict's neighbour tables
            block = vectors[lo:lo + 16 * batch_size]
            raw, strength = approximate_predict(self.clusterer, self.project(block, batch_size))
            labels[lo:lo + len(block)] = raw
            strengths[lo:lo + len(block)] = np.nan_to_num(strength.astype(np.float32))
            if bar is not None:
                bar.update(len(block))
        if bar is not None:
            bar.close()
        return self._to_stable(labels, self.label_map), strengths

    def centroid_similarity(self, vectors: np.ndarray, labels: np.ndarray, block: int = 65536) -> np.ndarray:
        """Cosine of each vector to its own cluster's centroid (0 for noise), in row blocks: no
        per-cluster copy of the vectors (a big cluster's copy was the labelling stage's RSS peak)."""
        sims = np.zeros(len(vectors), np.float32)
        if not self.centroids or len(vectors) == 0:
            return sims
        ids = self.cluster_ids
        table = np.vstack([np.stack([self.centroids[c] for c in ids]), np.zeros((1, vectors.shape[1]), np.float32)])
        lut = {c: i for i, c in enumerate(ids)}
        rows = np.array([lut.get(int(c), len(ids)) for c in labels.tolist()], np.int64)  # noise -> zero row
        for lo in range(0, len(vectors), block):
            chunk = np.asarray(vectors[lo:lo + block], np.float32)
            sims[lo:lo + len(chunk)] = np.einsum("ij,ij->i", chunk, table[rows[lo:lo + len(chunk)]])
        return sims

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("ClusteringPipeline is not fitted: call fit() or ClusteringPipeline.load(path)")

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write to a directory atomically (temp dir + rename): a killed run leaves the old model."""
        import joblib

        if self.reducer is None:
            raise RuntimeError("nothing to save: the pipeline has no fitted UMAP yet")
        ids = self.cluster_ids
        meta = {"config": asdict(self.config), "cluster_ids": ids, "sizes": {str(c): self.sizes[c] for c in ids},
                "titles": {str(c): t for c, t in self.titles.items()},
                "keyphrases": {str(c): k for c, k in self.keyphrases.items()},
                "label_map": {str(r): s for r, s in self.label_map.items()},
                "next_cluster_id": self.next_cluster_id,
                "id_assignment": self.id_assignment.rows() if self.id_assignment else None, "format": 2}

        def write(tmp: Path) -> None:
            joblib.dump({"reducer": self.reducer, "clusterer": self.clusterer}, tmp / "models.joblib")
            np.save(tmp / "centroids.npy", np.stack([self.centroids[c] for c in ids]) if ids else np.zeros((0, 0)))
            (tmp / "pipeline.json").write_text(json.dumps(meta, indent=2))

        return atomic_write_dir(path, write)

    @classmethod
    def load(cls, path: str | Path) -> "ClusteringPipeline":
        import joblib

        path = Path(path)
        recover_dir(path)
        if not (path / "pipeline.json").exists():
            raise FileNotFoundError(f"no saved ClusteringPipeline at {str(path)!r} (missing pipeline.json)")
        meta = json.loads((path / "pipeline.json").read_text())
        pipe = cls(ClusteringConfig(**meta["config"]))
        models = joblib.load(path / "models.joblib")
        pipe.reducer, pipe.clusterer = models["reducer"], models["clusterer"]
        ids = [int(c) for c in meta["cluster_ids"]]
        cents = np.load(path / "centroids.npy")
        pipe.centroids = {c: cents[i].astype(np.float32) for i, c in enumerate(ids)}
        pipe.sizes = {int(c): int(s) for c, s in meta["sizes"].items()}
        pipe.titles = {int(c): t for c, t in meta["titles"].items()}
        pipe.keyphrases = {int(c): k for c, k in meta.get("keyphrases", {}).items()}
        # format 1 (before stable ids): raw labels were the ids
        pipe.label_map = {int(r): int(s) for r, s in meta.get("label_map", {c: c for c in ids}).items()}
        pipe.next_cluster_id = int(meta.get("next_cluster_id", max(ids, default=-1) + 1))
        return pipe


def _size_cap(clusterer, fraction: float | None, min_cluster_size: int) -> int:
    """HDBSCAN's `max_cluster_size` for a refit when a selected cluster holds more than `fraction`
    of the fit points, else 0 (no refit). The cap never falls below the largest leaf of the
    condensed tree: a cluster with nothing below it would otherwise turn into noise, not split."""
    labels = clusterer.labels_
    if fraction is None or not (labels >= 0).any():
        return 0
    largest = int(np.bincount(labels[labels >= 0]).max())
    limit = int(fraction * len(labels))
    if largest <= limit:
        return 0
    tree = clusterer.condensed_tree_._raw_tree
    clusters = tree[tree["child_size"] > 1]
    leaves = clusters[~np.isin(clusters["child"], clusters["parent"])]
    largest_leaf = int(leaves["child_size"].max()) if len(leaves) else len(labels)
    cap = max(limit, largest_leaf, min_cluster_size)
    return cap if largest > cap else 0  # the oversized cluster is itself a leaf: a refit changes nothing


def _check_vectors(vectors: np.ndarray, block: int = 65536) -> np.ndarray:
    """2-D and finite; float32 as given (no copy), float16 stays float16 (callers convert in
    blocks). The finiteness scan runs in blocks so it never allocates a corpus-sized mask."""
    vectors = np.asarray(vectors)
    if vectors.dtype not in (np.float32, np.float16):
        vectors = vectors.astype(np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-D array of span vectors, got shape {vectors.shape}")
    bad = sum(int((~np.isfinite(vectors[lo:lo + block])).any(axis=1).sum()) for lo in range(0, len(vectors), block))
    if bad:
        raise ValueError(f"{bad} span vector(s) contain NaN or inf; re-run span_embeddings")
    return vectors
