"""Stable cluster ids across refits, the saved mapping, and atomic writes of the pipeline."""

import json

import numpy as np
import pytest

from emerge.atomic import leftover_temps
from emerge.discovery.cluster_ids import match_cluster_ids
from emerge.discovery.pipeline import NOISE, ClusteringPipeline
from emerge.config import ClusteringConfig


def unit_rows(rng, n, d):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_matched_clusters_keep_their_ids_and_new_ones_get_fresh_ids():
    rng = np.random.default_rng(0)
    base = unit_rows(rng, 4, 16)
    previous = {10: base[0], 11: base[1], 12: base[2]}           # a 4th topic never existed before
    # the refit finds the same three topics (slightly moved) in another order, plus a new one
    noisy = base + 0.05 * rng.normal(size=base.shape)
    new = {0: noisy[2], 1: noisy[3], 2: noisy[0], 3: noisy[1]}
    out = match_cluster_ids(new, previous, next_id=13)
    assert out.mapping == {0: 12, 2: 10, 3: 11, 1: 13}
    assert out.new_ids == [13] and out.retired_ids == [] and out.next_id == 14
    assert all(s > 0.9 for s in out.similarity.values())


def test_retired_ids_are_never_reused_and_threshold_applies():
    rng = np.random.default_rng(1)
    base = unit_rows(rng, 3, 16)
    previous = {0: base[0], 1: base[1]}
    out = match_cluster_ids({0: base[0], 1: base[2]}, previous, next_id=5)   # id 1's topic vanished
    assert out.mapping[0] == 0
    assert out.mapping[1] == 5                      # not 1 (retired), not 2 (below next_id)
    assert out.retired_ids == [1]
    strict = match_cluster_ids({0: base[0] + 0.5 * base[1]}, previous, next_id=5, min_similarity=0.99)
    assert strict.mapping == {0: 5} and strict.retired_ids == [0, 1]


def test_first_fit_and_other_model_dimension_number_from_next_id():
    rng = np.random.default_rng(2)
    assert match_cluster_ids({0: rng.normal(size=8), 1: rng.normal(size=8)}, None).mapping == {0: 0, 1: 1}
    out = match_cluster_ids({0: rng.normal(size=8)}, {3: rng.normal(size=16)}, next_id=4)
    assert out.mapping == {0: 4} and out.retired_ids == [3]
    with pytest.raises(ValueError, match="min_similarity"):
        match_cluster_ids({}, None, min_similarity=1.5)


def blobs(rng, centres, per=40, spread=0.05):
    d = centres.shape[1]
    vecs = np.concatenate([c + spread * rng.normal(size=(per, d)) for c in centres])
    return (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def two_fits(tmp_path_factory):
    """Fit on three topics; refit on the same topics in another order plus a new one."""
    rng = np.random.default_rng(3)
    centres = unit_rows(rng, 4, 24) * 3
    cfg = ClusteringConfig(n_neighbors=10, min_cluster_size=15, random_state=7)
    first = ClusteringPipeline(cfg).fit(blobs(rng, centres[:3]))
    first.assign_stable_ids(None)
    path = tmp_path_factory.mktemp("clustering") / "clustering"
    first.save(path)
    previous = ClusteringPipeline.load(path)
    refit_vectors = blobs(rng, centres[[3, 2, 0, 1]])
    second = ClusteringPipeline(cfg).fit(refit_vectors)
    assignment = second.assign_stable_ids(previous)
    second.save(path)
    return {"first": first, "second": second, "assignment": assignment, "path": path, "centres": centres,
            "rng": rng}


def test_refit_keeps_ids_of_the_same_topics(two_fits):
    first, second = two_fits["first"], two_fits["second"]
    assert len(first.cluster_ids) == 3 and len(second.cluster_ids) == 4
    rng = two_fits["rng"]
    probe = blobs(rng, two_fits["centres"][:3], per=10)
    labels_first, _ = first.predict(probe)
    labels_second, _ = second.predict(probe)
    assert (labels_first != NOISE).mean() > 0.9
    both = (labels_first != NOISE) & (labels_second != NOISE)
    assert (labels_first[both] == labels_second[both]).all()   # same topic, same id after the refit
    new_topic, _ = second.predict(blobs(rng, two_fits["centres"][3:], per=10))
    assert set(new_topic[new_topic != NOISE].tolist()) == {3}   # the fresh id, not a reused one
    assert two_fits["assignment"].new_ids == [3] and second.next_cluster_id == 4
    assert set(np.unique(second.fit_labels_).tolist()) <= {NOISE, 0, 1, 2, 3}


def test_saved_pipeline_keeps_the_mapping(two_fits):
    loaded = ClusteringPipeline.load(two_fits["path"])
    assert loaded.label_map == two_fits["second"].label_map and loaded.next_cluster_id == 4
    meta = json.loads((two_fits["path"] / "pipeline.json").read_text())
    statuses = sorted(r["status"] for r in meta["id_assignment"])
    assert statuses == ["matched", "matched", "matched", "new"]
    probe = blobs(two_fits["rng"], two_fits["centres"], per=5)
    assert (loaded.predict(probe)[0] == two_fits["second"].predict(probe)[0]).all()
    assert not leftover_temps(two_fits["path"].parent)


def test_interrupted_folder_swap_is_recovered_on_load(two_fits, tmp_path):
    import shutil

    target = tmp_path / "clustering"
    shutil.copytree(two_fits["path"], target)
    # a crash between "old folder renamed aside" and "new folder renamed in"
    target.rename(tmp_path / ".clustering.old-99999-deadbeef")
    loaded = ClusteringPipeline.load(target)
    assert loaded.next_cluster_id == 4 and target.exists() and not leftover_temps(tmp_path)


def test_titles_follow_stable_ids_unless_the_content_moved_and_user_titles_win(tmp_path):
    from emerge.discovery.fit import load_title_overrides, title_clusters

    rng = np.random.default_rng(5)
    centres = unit_rows(rng, 3, 24)
    moved = 0.9 * centres[2] + np.sqrt(1 - 0.81) * unit_rows(rng, 1, 24)[0]  # cosine ~0.9 to the old centre
    cfg = ClusteringConfig(n_neighbors=10, min_cluster_size=15, random_state=7)
    per = 40

    def fit(cents, words, previous=None, overrides=None):
        pipe = ClusteringPipeline(cfg).fit(blobs(rng, np.stack(cents) * 3, per=per))
        pipe.assign_stable_ids(previous)
        texts = [f"{words[i]} topic text number {j}" for i in range(len(cents)) for j in range(per)]
        title_clusters(pipe, texts, previous, overrides)
        return pipe

    first = fit([centres[0], centres[1], centres[2]], ["rocket", "carrot", "penalty"])
    # the refit's texts would title every cluster differently; only the moved cluster should change
    second = fit([centres[0], centres[1], moved], ["orbit", "garden", "goalkeeper"], previous=first)
    sims = second.id_assignment.similarity
    assert len(sims) == 3 and min(sims.values()) < 0.95 <= sorted(sims.values())[1]
    steady = [c for c, s in sims.items() if s >= 0.95]
    moved_id = next(c for c, s in sims.items() if s < 0.95)
    assert all(second.titles[c] == first.titles[c] for c in steady)
    assert second.titles[moved_id] != first.titles[moved_id] and "Goalkeeper" in second.titles[moved_id]

    (tmp_path / "titles.yaml").write_text(f'{steady[0]}: "Space exploration"\n99: "gone"\n')
    overrides = load_title_overrides(tmp_path / "titles.yaml")
    third = fit([centres[0], centres[1], moved], ["orbit", "garden", "goalkeeper"], previous=second,
                overrides=overrides)
    assert third.titles[steady[0]] == "Space exploration" and 99 not in third.titles


@pytest.mark.parametrize("content, message", [
    ("1: [unclosed", "line 1"), ("- a list", "mapping"), ("abc: Title", "not a cluster id"), ("3: ''", "non-empty")])
def test_bad_cluster_titles_file_names_the_file_and_the_problem(tmp_path, content, message):
    from emerge.discovery.fit import load_title_overrides
    from emerge.errors import ConfigError

    path = tmp_path / "cluster_titles.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as err:
        load_title_overrides(path)
    assert str(path) in str(err.value)
