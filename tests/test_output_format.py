"""What a user reads: run-log lines, metadata tables and dataset cards say the right thing."""

import numpy as np
import polars as pl

from emerge.dataset import dataset_card
from emerge_assets.assets.training import training_log_line
from emerge_assets.metadata import shorten


def test_training_log_keeps_small_learning_rates_readable():
    line = training_log_line({"step": 3, "max_steps": 10, "learning_rate": 2e-05, "loss": 0.123456, "epoch": 1})
    assert line.startswith("training step 3/10:") and "2e-05" in line and "0.1235" in line


def test_table_cells_are_cut_at_a_word_boundary():
    text = "the cluster is about gardening and the inside of greenhouses"
    cut = shorten(text, 30)
    assert len(cut) <= 30 and cut.endswith("…") and text.startswith(cut[:-1])
    assert text[len(cut) - 1] == " "  # cut before a space, never inside a word
    assert shorten("short", 30) == "short"


def test_dataset_card_lists_tied_labels_in_the_same_order_whatever_the_row_order():
    rows = pl.DataFrame({"cluster_id": [2, 1, 3, 3], "cluster_title": ["b", "a", "c", "c"], "doc_id": ["x"] * 4,
                         "relevance": [0.5] * 4, "quality": [0.5] * 4})
    cards = [dataset_card(frame, title="t", config={}, model="m", counts={}).split("Created")[1].split("\n", 1)[1]
             for frame in (rows, rows.reverse())]
    assert cards[0] == cards[1]


def test_no_sources_message_says_what_is_wrong_and_how_to_lay_out_sources(tmp_path):
    from emerge_assets.curate import no_sources_reason

    assert "does not exist" in no_sources_reason(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    loose = no_sources_reason(tmp_path)
    assert "1 file(s) but no source sub-folder" in loose and "ROOT/<source>/" in loose
    (tmp_path / "empty").mkdir()
    assert "is empty" in no_sources_reason(tmp_path / "empty")


def test_every_input_gets_one_outcome():
    from emerge.dataset import document_accounting

    spans = pl.DataFrame({"source": ["a", "a", "a", "b"], "span_idx": [0, 1, 2, 0],
                          "doc_id": ["a1", "a1", "a2", "b1"], "text_span": ["w", "x", "y", "z"]})
    labelled = spans.filter(pl.col("span_idx") == 2)
    inventory = pl.DataFrame({"source": ["a", "a", "a", "a"], "doc_id": ["a1", "a2", "a3", "a4"],
                              "path": ["p"] * 4, "record": ["0"] * 4,
                              "status": ["kept", "kept", "kept", "skipped"], "reason": [None, None, None, "empty"]})
    other = pl.DataFrame({"source": ["b"], "doc_id": ["b1"], "path": ["q"], "record": ["0"], "status": ["kept"],
                          "reason": [None], "text": ["a column the other source lacks"]})
    fate = document_accounting([inventory, other], spans, dataset=labelled.filter(pl.col("doc_id") == "a2"))
    assert dict(zip(fate["doc_id"], fate["outcome"])) == {
        "a1": "no_span_selected", "a2": "in_dataset", "a3": "shorter_than_min_len", "a4": "empty",
        "b1": "no_span_selected"}


def _source(name: str, n_docs: int, rng, shared_vectors: np.ndarray):
    """One source as the assets hold it: raw_texts, spans, span vectors (some shared with other
    sources, so near-duplicates cross sources) and cluster labels."""
    from emerge.dataset import SourceSpans

    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    docs, spans = [], []
    for d in range(n_docs):
        text = ". ".join(" ".join(rng.choice(words, 6)) for _ in range(8)) + "."
        doc_id = f"{name}-{d}"
        docs.append({"doc_id": doc_id, "source": name, "path": f"{d}.txt", "record": "", "status": "kept",
                     "reason": None, "text": text, "n_chars": len(text)})
        for start in range(0, len(text) - 40, 13):
            end = min(len(text), start + int(rng.integers(30, 90)))
            spans.append({"source": name, "doc_id": doc_id, "start_char": start, "end_char": end,
                          "n_tokens": (end - start) // 4, "text_span": text[start:end]})
    docs.append({"doc_id": f"{name}-skipped", "source": name, "path": "x.bin", "record": "", "status": "skipped",
                 "reason": "binary", "text": None, "n_chars": 0})
    frame = pl.DataFrame(spans).with_row_index("span_idx").with_columns(pl.col("span_idx").cast(pl.Int64))
    vecs = rng.normal(size=(frame.height, 8)).astype(np.float32)
    vecs[::2] = shared_vectors[rng.integers(0, len(shared_vectors), len(vecs[::2]))]
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = frame.select("span_idx").with_columns(
        pl.Series("cluster_id", rng.integers(-1, 3, frame.height)),
        pl.Series("relevance", rng.random(frame.height).astype(np.float32)),
        pl.Series("membership", rng.random(frame.height).astype(np.float32)),
        pl.Series("centroid_sim", rng.random(frame.height).astype(np.float32)),
    ).with_columns(pl.format("title {}", pl.col("cluster_id")).alias("cluster_title")).filter(
        pl.col("span_idx") % 11 != 3)  # spans outside the analyzer's bounds carry no label
    emb = frame.select("span_idx").with_columns(pl.Series("embedding", vecs.astype(np.float16),
                                                          dtype=pl.Array(pl.Float16, 8)))
    inventory = pl.DataFrame(docs)
    return SourceSpans(name, frame.lazy(), emb.lazy(), labels, inventory), vecs


def test_dataset_built_source_by_source_equals_selection_over_all_sources(tmp_path):
    from emerge.config import SelectionConfig, SpanConfig
    from emerge.dataset import build_curated_dataset, curate
    from emerge.ingest import document_texts
    from emerge.label_scheme import CLUSTERS

    rng = np.random.default_rng(0)
    shared = rng.normal(size=(6, 8)).astype(np.float32)
    parts = [_source(name, n, rng, shared) for name, n in [("a", 6), ("b", 9)]]
    selection = SelectionConfig(quality_threshold=0.2, near_duplicate_threshold=0.95, max_spans_per_cluster=40)
    span_config = SpanConfig(min_len=5, max_len=25)
    made = build_curated_dataset(name="ds", out_dir=tmp_path, scheme=CLUSTERS, sources=[p for p, _ in parts],
                                 inventories=[p.documents for p, _ in parts], selection=selection,
                                 span_config=span_config, model_name="m")
    spans = pl.concat([p.spans.collect() for p, _ in parts])
    labels = pl.concat([p.labels.with_columns(source=pl.lit(p.name)) for p, _ in parts])
    vectors = np.concatenate([v for _, v in parts]).astype(np.float16)
    joined = spans.with_row_index("_pos").join(labels, on=["source", "span_idx"], how="inner", maintain_order="left")
    expected = curate(joined.drop("_pos"), vectors[joined["_pos"].to_numpy()],
                      document_texts(*(p.documents for p, _ in parts)), selection, span_config)
    assert made.frame.height > 10 and made.frame.equals(expected)
    assert made.frame["source"].n_unique() == 2 and made.counts["spans_considered"] == joined.height
    assert made.outcomes["binary"] == 2 and sum(made.outcomes.values()) == 17  # every input accounted for
    assert pl.read_parquet(made.paths["parquet"]).equals(made.frame)
    # the cross-source step ran: one source alone keeps spans that the other source's copies displace
    alone = build_curated_dataset(name="alone", out_dir=tmp_path, scheme=CLUSTERS, sources=[parts[1][0]],
                                  inventories=[parts[1][0].documents], selection=selection,
                                  span_config=span_config, model_name="m")
    assert alone.frame.height > made.frame.filter(pl.col("source") == "b").height


def test_the_cross_document_step_holds_one_label_at_a_time(tmp_path, caplog):
    """Near-duplicates and the cap work within a label, so the dataset step reads one label's picks
    (spilled per label) instead of every source's: the log names the largest label's share."""
    import logging
    import re

    from emerge.config import SelectionConfig, SpanConfig
    from emerge.dataset import build_curated_dataset
    from emerge.label_scheme import CLUSTERS

    rng = np.random.default_rng(1)
    parts = [_source(name, 8, rng, rng.normal(size=(6, 8)).astype(np.float32)) for name in ("a", "b")]
    with caplog.at_level(logging.INFO, logger="emerge.dataset"):
        made = build_curated_dataset(name="ds", out_dir=tmp_path, scheme=CLUSTERS, sources=[p for p, _ in parts],
                                     inventories=[p.documents for p, _ in parts],
                                     selection=SelectionConfig(quality_threshold=0.2, include_noise=True),
                                     span_config=SpanConfig(min_len=5, max_len=25), model_name="m")
    picks, kept, largest = map(int, re.search(r"(\d+) non-overlapping spans -> (\d+) kept .* the largest held (\d+)",
                                              caplog.text).groups())
    assert kept == made.frame.height and made.frame["cluster_id"].n_unique() == 4  # noise (-1) kept as a label
    assert largest < picks
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".picks-")] == []  # the spill is removed
