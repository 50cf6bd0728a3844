"""Unsupervised path: fit the global clustering on a bounded sample, label every span, title clusters."""

from __future__ import annotations

import numpy as np
import polars as pl

from emerge.discovery.cluster_ids import DEFAULT_MIN_SIMILARITY
from emerge.discovery.pipeline import NOISE, ClusteringPipeline, select_fit_sample
from emerge.config import ClusteringConfig
from emerge.discovery.titles import ctfidf_keyphrases, title_from_keyphrases

NOISE_TITLE = "Noise (no cluster)"


def fit_clustering(spans: pl.DataFrame, vectors: np.ndarray, config: ClusteringConfig,
                   previous: ClusteringPipeline | None = None,
                   min_similarity: float = DEFAULT_MIN_SIMILARITY,
                   title_overrides: dict[int, str] | None = None, namer=None) -> tuple[ClusteringPipeline, np.ndarray]:
    """Fit UMAP+HDBSCAN on the fit sample and title the clusters; returns (pipeline, sample rows).

    With `previous` (the last saved fit) clusters keep their ids where a centroid matches, and
    their titles where it barely moved (`title_clusters`).
    """
    sample = select_fit_sample(spans, config)
    pipeline = ClusteringPipeline(config).fit(vectors[sample])
    pipeline.assign_stable_ids(previous, min_similarity)
    title_clusters(pipeline, spans["text_span"].gather(sample).to_list(), previous, title_overrides, namer)
    return pipeline, sample


def cluster_projected_sample(projected: ClusteringPipeline, sample: pl.DataFrame, min_cluster_size: int | None,
                             min_samples: int | None,
                             max_cluster_fraction: float | None = ClusteringConfig.max_cluster_fraction,
                             previous: ClusteringPipeline | None = None,
                             min_similarity: float = DEFAULT_MIN_SIMILARITY,
                             title_overrides: dict[int, str] | None = None, namer=None):
    """HDBSCAN on a fit sample that UMAP has already projected (rows with `coords`, `embedding`
    and `text_span`), so trying another `min_cluster_size` re-runs seconds of HDBSCAN, not UMAP.
    Clusters keep `previous`'s ids where a centroid matches, and get titles.

    Returns (pipeline, id assignment, the sample's rows without coords and vectors, plus
    cluster_id, cluster_title and membership)."""
    from dataclasses import replace

    from emerge.embedding import vectors_of

    pipeline = ClusteringPipeline.from_reducer(projected, replace(
        projected.config, min_cluster_size=min_cluster_size, min_samples=min_samples,
        max_cluster_fraction=max_cluster_fraction))
    pipeline.fit_clusterer(vectors_of(sample), coords=sample["coords"].to_numpy())
    ids = pipeline.assign_stable_ids(previous, min_similarity)
    title_clusters(pipeline, sample["text_span"].to_list(), previous, title_overrides, namer)
    labels = pipeline.fit_labels_
    rows = sample.drop("coords", "embedding").with_columns(
        pl.Series("cluster_id", labels, dtype=pl.Int64),
        pl.Series("cluster_title", [pipeline.titles.get(int(c), NOISE_TITLE) for c in labels.tolist()]),
        pl.Series("membership", pipeline.fit_strengths_, dtype=pl.Float32))
    return pipeline, ids, rows


KEEP_TITLE_SIMILARITY = 0.95  # a refit cluster this close to its previous centroid keeps its title


def title_clusters(pipeline: ClusteringPipeline, fit_texts: list[str], previous: ClusteringPipeline | None = None,
                   overrides: dict[int, str] | None = None, namer=None) -> None:
    """Set keyphrases and titles from the fit sample's texts (non-overlapping, so no word is
    counted many times over by dense spans).

    A title is something users learn and refer to, so after a refit a matched cluster whose
    centroid barely moved (cosine >= KEEP_TITLE_SIMILARITY to the previous fit's) keeps the
    previous fit's title and keyphrases; a user's `overrides` (stable id -> title) win over both.
    An optional `namer` (`emerge.discovery.title_namer.TitleNamer`) words the titles of the other clusters
    from their keyphrases and texts.
    """
    by_cluster: dict[int, list[str]] = {}
    for text, label in zip(fit_texts, pipeline.fit_labels_.tolist()):
        if label != NOISE:
            by_cluster.setdefault(int(label), []).append(text)
    pipeline.keyphrases = ctfidf_keyphrases(by_cluster)
    pipeline.titles = {c: title_from_keyphrases(k) for c, k in pipeline.keyphrases.items()}
    kept: set[int] = set()
    if previous is not None and pipeline.id_assignment is not None:
        for c, similarity in pipeline.id_assignment.similarity.items():
            if similarity >= KEEP_TITLE_SIMILARITY and c in previous.titles and c in pipeline.titles:
                pipeline.titles[c] = previous.titles[c]
                pipeline.keyphrases[c] = previous.keyphrases.get(c, pipeline.keyphrases[c])
                kept.add(c)
    if namer is not None:
        pipeline.titles |= namer.name_clusters(pipeline.keyphrases, by_cluster,
                                               {c: t for c, t in pipeline.titles.items() if c not in kept})
    for c, title in (overrides or {}).items():
        if c in pipeline.titles:
            pipeline.titles[c] = title


def load_title_overrides(path) -> dict[int, str]:
    """A user's cluster titles from a YAML or JSON mapping `cluster id: title`. Ids are stable
    across refits, so the file keeps naming the same clusters; ids no longer present are ignored."""
    from pathlib import Path

    import yaml

    from emerge.errors import ConfigError

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("cluster_titles", f"{path}{where}: not valid YAML/JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError("cluster_titles", f"{path}: expected a mapping of cluster id to title")
    out = {}
    for key, title in raw.items():
        try:
            cid = int(key)
        except (TypeError, ValueError):
            raise ConfigError("cluster_titles", f"{path}: {key!r} is not a cluster id (an integer)") from None
        if not isinstance(title, str) or not title.strip():
            raise ConfigError("cluster_titles", f"{path}: the title of cluster {cid} must be non-empty text")
        out[cid] = title.strip()
    return out


def cluster_relevance(membership: np.ndarray, centroid_sim: np.ndarray) -> np.ndarray:
    """Relevance to the assigned cluster: HDBSCAN membership strength and cosine to the centroid,
    equally weighted, in [0, 1]. Noise spans get their (zero) membership only."""
    return (0.5 * np.clip(membership, 0, 1) + 0.5 * np.clip(centroid_sim, 0, 1)).astype(np.float32)


def label_spans(pipeline: ClusteringPipeline, spans: pl.DataFrame, vectors: np.ndarray,
                progress: bool = False) -> pl.DataFrame:
    """`spans` plus cluster_id, cluster_title, membership, centroid_sim, relevance."""
    labels, strengths = pipeline.predict(vectors, progress=progress)
    sims = pipeline.centroid_similarity(vectors, labels)
    ids = pl.Series("cluster_id", labels, dtype=pl.Int64)
    names = {c: pipeline.titles.get(c, "Untitled") for c in np.unique(labels).tolist()} | {NOISE: NOISE_TITLE}
    return spans.with_columns(
        ids,
        ids.replace_strict(names, return_dtype=pl.String).alias("cluster_title"),
        pl.Series("membership", strengths, dtype=pl.Float32),
        pl.Series("centroid_sim", sims, dtype=pl.Float32),
        pl.Series("relevance", cluster_relevance(strengths, sims), dtype=pl.Float32),
    )


def cluster_table(labelled: pl.DataFrame, pipeline: ClusteringPipeline, examples: int = 2) -> pl.DataFrame:
    """One row per cluster: id, title, size (spans), documents, example spans (most relevant)."""
    rows = []
    for c in pipeline.cluster_ids:
        members = labelled.filter(pl.col("cluster_id") == c)
        top = members.sort("relevance", descending=True).unique("doc_id", keep="first", maintain_order=True)
        rows.append({"cluster_id": c, "title": pipeline.titles.get(c, "Untitled"), "spans": members.height,
                     "documents": members["doc_id"].n_unique(),
                     "examples": " | ".join(t[:120] for t in top["text_span"].head(examples).to_list())})
    return pl.DataFrame(rows, schema={"cluster_id": pl.Int64, "title": pl.String, "spans": pl.Int64,
                                      "documents": pl.Int64, "examples": pl.String})
