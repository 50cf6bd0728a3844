import numpy as np
import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score

from emerge.discovery.pipeline import ClusteringPipeline, load_fit_sample, select_fit_sample
from emerge.config import ClusteringConfig
from emerge.errors import InputError


def blobs(n_per=60, k=3, dim=32, seed=0, spread=0.15, noise_seed=None):
    """Points around `seed`'s centres; another `noise_seed` draws new points around the same centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    if noise_seed is not None:
        rng = np.random.default_rng(noise_seed)
    x = np.concatenate([c + spread * rng.normal(size=(n_per, dim)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


@pytest.fixture(scope="module")
def fitted():
    x, y = blobs()
    return ClusteringPipeline(ClusteringConfig(random_state=0, min_cluster_size=10)).fit(x), x, y


def test_recovers_planted_blobs(fitted):
    pipe, x, y = fitted
    assert len(pipe.cluster_ids) == 3
    assert adjusted_rand_score(y, pipe.fit_labels_) > 0.9


def test_predict_new_points_without_refit(fitted):
    pipe, _, _ = fitted
    x_new, y_new = blobs(n_per=20, seed=0, noise_seed=5)  # same centres, points the fit never saw
    labels, strengths = pipe.predict(x_new)
    assert adjusted_rand_score(y_new, labels) > 0.9
    assert ((strengths >= 0) & (strengths <= 1)).all()


def test_save_load_round_trip_predicts_identically(fitted, tmp_path):
    pipe, x, _ = fitted
    pipe.titles = {c: f"topic {c}" for c in pipe.cluster_ids}
    pipe.save(tmp_path / "clustering")
    loaded = ClusteringPipeline.load(tmp_path / "clustering")
    a, sa = pipe.predict(x[:50])
    b, sb = loaded.predict(x[:50])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb)
    assert loaded.titles == pipe.titles
    for c in pipe.cluster_ids:
        np.testing.assert_allclose(loaded.centroids[c], pipe.centroids[c])
    pipe.save(tmp_path / "clustering")  # overwriting an existing save works and leaves no temp dirs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clustering"]


def test_fit_is_reproducible_with_a_seed():
    x, _ = blobs(seed=3)
    a = ClusteringPipeline(ClusteringConfig(random_state=7, min_cluster_size=10)).fit(x)
    b = ClusteringPipeline(ClusteringConfig(random_state=7, min_cluster_size=10)).fit(x)
    np.testing.assert_array_equal(a.fit_labels_, b.fit_labels_)
    np.testing.assert_allclose(a.fit_embedding_, b.fit_embedding_)


def test_too_few_points_is_a_clear_error():
    x, _ = blobs(n_per=3)
    with pytest.raises(InputError, match="at least 10 spans"):
        ClusteringPipeline().fit(x)


def test_non_finite_vectors_are_rejected():
    x, _ = blobs()
    x[4, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        ClusteringPipeline().fit(x)


def test_load_missing_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved ClusteringPipeline"):
        ClusteringPipeline.load(tmp_path / "nope")


def test_fit_sample_takes_non_overlapping_spans_per_document():
    rows = []
    for doc in ["a", "b"]:
        for s in range(0, 200, 4):
            for length in (8, 16, 32):
                if s + length <= 200:
                    rows.append({"doc_id": doc, "tok_start": s, "tok_end": s + length, "n_tokens": length})
    spans = pl.DataFrame(rows)
    sample = select_fit_sample(spans, ClusteringConfig(max_fit_spans_per_doc=2, max_fit_spans=10))
    picked = spans[sample]
    assert picked.group_by("doc_id").len()["len"].to_list() == [2, 2]
    assert (picked["n_tokens"] == 32).all()
    for doc in picked.partition_by("doc_id"):
        (s1, e1), (s2, e2) = sorted(doc.select("tok_start", "tok_end").iter_rows())
        assert e1 <= s2
    capped = select_fit_sample(spans, ClusteringConfig(max_fit_spans_per_doc=8, max_fit_spans=10))
    assert len(capped) == 10


def _source_files(tmp_path, name, n_docs, seed):
    """One source's spans and span embeddings as the assets write them, returned as scans."""
    rng = np.random.default_rng(seed)
    rows = [{"source": name, "doc_id": f"{name}-{d}", "tok_start": s, "tok_end": s + n, "n_tokens": n,
             "text_span": f"{name} {d} {s} {n}"}
            for d in range(n_docs) for s in range(0, int(rng.integers(40, 120)), 4) for n in (8, 16)]
    spans = pl.DataFrame(rows).with_row_index("span_idx").with_columns(pl.col("span_idx").cast(pl.Int64))
    vecs = rng.normal(size=(spans.height, 8)).astype(np.float16)
    emb = spans.select("span_idx").with_columns(pl.Series("embedding", vecs, dtype=pl.Array(pl.Float16, 8)))
    spans.write_parquet(tmp_path / f"{name}.spans.parquet")
    emb.write_parquet(tmp_path / f"{name}.emb.parquet")
    return spans, vecs, (pl.scan_parquet(tmp_path / f"{name}.spans.parquet"),
                         pl.scan_parquet(tmp_path / f"{name}.emb.parquet"))


def test_fit_sample_drawn_source_by_source_equals_the_sample_of_all_sources(tmp_path):
    parts = {name: _source_files(tmp_path, name, n_docs, seed)
             for name, n_docs, seed in [("b_news", 7, 1), ("a_blog", 3, 2), ("c_mail", 12, 3)]}
    cfg = ClusteringConfig(max_fit_spans_per_doc=3, max_fit_spans=25)
    sample, vectors, total = load_fit_sample({name: scans for name, (_, _, scans) in parts.items()}, cfg)
    names = sorted(parts)  # the assets' order
    all_spans = pl.concat([parts[n][0] for n in names])
    expected = select_fit_sample(all_spans, cfg)
    assert total == all_spans.height and len(expected) == 25
    assert sample.select("source", "span_idx", "doc_id", "text_span").equals(
        all_spans[expected].select("source", "span_idx", "doc_id", "text_span"))
    np.testing.assert_array_equal(vectors, np.concatenate([parts[n][1] for n in names])[expected].astype(np.float32))
    assert set(sample["source"]) == set(names)  # every source contributes to the capped sample


def test_fit_sample_refuses_vectors_of_other_spans(tmp_path):
    spans, _, (scan, emb) = _source_files(tmp_path, "a", 4, 0)
    stale = emb.collect().head(spans.height - 3)
    with pytest.raises(InputError, match="stale"):
        load_fit_sample({"a": (scan, stale)}, ClusteringConfig(max_fit_spans_per_doc=3, max_fit_spans=10))


def test_knn_projection_agrees_with_umap_transform(fitted):
    from dataclasses import replace

    pipe, x, y = fitted
    x_new, _ = blobs(n_per=20, seed=0, noise_seed=7)
    exact = ClusteringPipeline(replace(pipe.config, transform="umap")).fit(x)  # keeps UMAP's own NN index
    knn = ClusteringPipeline(replace(pipe.config, transform="knn"))
    knn.reducer, knn.clusterer, knn.centroids = exact.reducer, exact.clusterer, exact.centroids
    knn_labels, _ = knn.predict(x_new)
    umap_labels, _ = exact.predict(x_new)
    assert (knn_labels == umap_labels).mean() >= 0.9
    own, _ = pipe.predict(x)  # the fit points themselves land in their own clusters
    assert (own == pipe.fit_labels_)[pipe.fit_labels_ >= 0].mean() >= 0.95


@pytest.mark.parametrize("bf16_shortlist", [False, True])
def test_cosine_index_finds_the_exact_neighbours(bf16_shortlist):
    from emerge.discovery.knn import CosineIndex, knn_graph

    rng = np.random.default_rng(3)
    keys = rng.normal(size=(700, 24)).astype(np.float32)
    keys[5] = keys[4]  # an exact duplicate: self must still come first in the graph
    queries = rng.normal(size=(90, 24)).astype(np.float32)
    idx, sim = CosineIndex(keys, shortlist_in_bf16=bf16_shortlist).search(queries, 7, block=32)
    unit_k = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    brute = unit_q @ unit_k.T
    expected = np.argsort(-brute, axis=1)[:, :7]
    assert (idx == expected).mean() > 0.99  # ties/rounding may swap a near-equal pair
    np.testing.assert_allclose(sim, np.take_along_axis(brute, idx, axis=1), atol=1e-5)
    graph_idx, graph_dist = knn_graph(keys, 5)
    assert (graph_idx[:, 0] == np.arange(len(keys))).all() and (graph_dist[:, 0] == 0).all()
    assert 4 in graph_idx[5] and 5 in graph_idx[4]
    assert (np.diff(graph_dist, axis=1) >= -1e-6).all()
    fast_idx, fast_sim = CosineIndex(keys, shortlist_in_bf16=bf16_shortlist).search(queries, 7, refine=False)
    true_kth = np.sort(brute, axis=1)[:, -7]
    assert (np.take_along_axis(brute, fast_idx, axis=1) >= true_kth[:, None] - 2e-2).all()  # bf16 rounding at most
    np.testing.assert_allclose(fast_sim, np.take_along_axis(brute, fast_idx, axis=1), atol=1e-2)


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_approximate_predict_equals_hdbscans(seed):
    import hdbscan

    from emerge.discovery.hdbscan_predict import approximate_predict

    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6, size=(5, 5))
    fit = np.concatenate([c + rng.normal(scale=0.3 + i * 0.3, size=(80, 5)) for i, c in enumerate(centres)]
                         + [rng.uniform(-12, 12, size=(40, 5))])
    clusterer = hdbscan.HDBSCAN(min_cluster_size=15, min_samples=5, prediction_data=True).fit(fit)
    new = np.concatenate([fit[::3] + rng.normal(scale=0.2, size=fit[::3].shape), rng.uniform(-15, 15, size=(60, 5))])
    want_labels, want_prob = hdbscan.approximate_predict(clusterer, new)
    labels, prob = approximate_predict(clusterer, new)
    assert len(set(want_labels.tolist()) - {-1}) >= 3  # a real multi-cluster case, noise included
    assert (want_labels == -1).any()
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(prob, want_prob, atol=1e-12)


def test_clustering_a_projected_sample_takes_new_hdbscan_settings_without_touching_the_projection(fitted):
    """`hdbscan_clusters` refits on `umap_projection`'s saved UMAP: the new min_cluster_size is
    used, the projected pipeline keeps its own config, and the rows carry the fit's labels."""
    from emerge.discovery.fit import NOISE_TITLE, cluster_projected_sample

    pipe, x, y = fitted
    sample = pl.DataFrame({"doc_id": [str(i) for i in range(len(x))], "text_span": [f"span {c}" for c in y]}).with_columns(
        pl.Series("coords", pipe.fit_embedding_, dtype=pl.Array(pl.Float32, pipe.fit_embedding_.shape[1])),
        pl.Series("embedding", x, dtype=pl.Array(pl.Float32, x.shape[1])))
    coarse, ids, rows = cluster_projected_sample(pipe, sample, min_cluster_size=70, min_samples=None)
    assert pipe.config.min_cluster_size == 10 and coarse.config.min_cluster_size == 70
    assert coarse.reducer is pipe.reducer
    assert len(coarse.cluster_ids) < len(pipe.cluster_ids)  # 60-span blobs cannot each be a 70-span cluster
    assert rows.columns == ["doc_id", "text_span", "cluster_id", "cluster_title", "membership"]
    assert rows["cluster_id"].to_list() == coarse.fit_labels_.tolist()
    noise = rows.filter(pl.col("cluster_id") < 0)["cluster_title"].unique().to_list()
    assert noise in ([], [NOISE_TITLE])
    _, _, same = cluster_projected_sample(pipe, sample, min_cluster_size=10, min_samples=None)
    assert adjusted_rand_score(same["cluster_id"].to_list(), pipe.fit_labels_) == 1.0


def _plane_blobs(centres, n, rng):
    return np.concatenate([np.asarray(c, float) + 0.1 * rng.standard_normal((n, 2)) for c in centres])


def test_a_cluster_holding_most_of_the_sample_is_replaced_by_the_clusters_below_it(fitted):
    """Three touching 200-point groups and a far 100-point one: excess of mass keeps the tree's
    first split (600 vs 100 points). The cap re-selects the three groups."""
    pipe, _, _ = fitted
    rng = np.random.default_rng(0)
    coords = np.concatenate([_plane_blobs([(0, 0), (0.5, 0), (0.25, 0.43)], 200, rng),
                             _plane_blobs([(10, 10)], 100, rng)]).astype(np.float32)
    vectors, _ = blobs(n_per=len(coords) // 4, k=4)
    uncapped = ClusteringPipeline.from_reducer(pipe, ClusteringConfig(min_cluster_size=20, max_cluster_fraction=None))
    uncapped.fit_clusterer(vectors, coords)
    assert sorted(uncapped.sizes.values()) == [100, 600] and uncapped.size_cap_ == 0

    capped = ClusteringPipeline.from_reducer(pipe, ClusteringConfig(min_cluster_size=20)).fit_clusterer(vectors, coords)
    assert len(capped.cluster_ids) == 4
    assert max(capped.sizes.values()) <= len(coords) / 2 < capped.size_cap_ + 1
    group = np.repeat([0, 1, 2, 3], [200, 200, 200, 100])
    kept = capped.fit_labels_ >= 0
    assert adjusted_rand_score(group[kept], capped.fit_labels_[kept]) > 0.95


def test_a_large_cluster_with_nothing_below_it_is_kept_not_turned_into_noise(fitted):
    pipe, _, _ = fitted
    rng = np.random.default_rng(1)
    coords = np.concatenate([_plane_blobs([(0, 0)], 600, rng), _plane_blobs([(10, 10)], 100, rng)]).astype(np.float32)
    vectors, _ = blobs(n_per=len(coords) // 2, k=2)
    capped = ClusteringPipeline.from_reducer(pipe, ClusteringConfig(min_cluster_size=20)).fit_clusterer(vectors, coords)
    assert sorted(capped.sizes.values()) == [100, 600]
    assert not (capped.fit_labels_ < 0).any()


def test_max_cluster_fraction_is_validated():
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="max_cluster_fraction"):
            ClusteringConfig(max_cluster_fraction=bad)


def test_labelling_progress_shows_a_span_count_and_changes_nothing(fitted, capsys):
    pipe, x, _ = fitted
    quiet = pipe.predict(x)
    shown = pipe.predict(x, batch_size=4, progress=True)  # 64-span blocks: several updates
    for a, b in zip(quiet, shown):
        np.testing.assert_array_equal(a, b)
    err = capsys.readouterr().err
    assert "labelling spans" in err and f"{len(x)}/{len(x)}" in err


_KERNEL_PROBE = """
import json, sys
import numpy as np
from emerge.discovery.umap_kernels import cache_umap_kernels
from umap.umap_ import smooth_knn_dist
enabled = cache_umap_kernels()
dist = np.sort(np.random.default_rng(0).random((6, 4)).astype(np.float32), axis=1)
smooth_knn_dist(dist, 4.0, local_connectivity=1.0)
print(json.dumps({"enabled": enabled, "hits": sum(smooth_knn_dist.stats.cache_hits.values()),
                  "misses": sum(smooth_knn_dist.stats.cache_misses.values())}))
"""


def test_umaps_kernels_compile_once_and_later_processes_load_them():
    """umap jit-compiles `smooth_knn_dist` & co. without numba's cache: every step process paid
    ~6 s before projecting a single span. After `cache_umap_kernels` a process compiles it at most
    once into NUMBA_CACHE_DIR (the suite's shared one: a fresh directory would make pynndescent
    recompile all of its kernels first) and the next process loads it instead of compiling."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    cache_dir = os.environ["NUMBA_CACHE_DIR"]  # tests/conftest.py

    def probe() -> dict:
        out = subprocess.run([sys.executable, "-c", _KERNEL_PROBE], capture_output=True, text=True,
                             check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    first, second = probe(), probe()
    assert "umap.umap_.smooth_knn_dist" in first["enabled"]
    assert first["hits"] + first["misses"] == 1  # compiled and saved here, or by an earlier test
    assert list(Path(cache_dir).rglob("umap_.smooth_knn_dist-*.nbi"))
    assert (second["hits"], second["misses"]) == (1, 0)  # loaded, not compiled
