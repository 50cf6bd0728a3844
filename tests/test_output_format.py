"""What a user reads: run-log lines, metadata tables and dataset cards say the right thing."""

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


def test_labels_join_onto_their_spans_and_every_input_gets_one_outcome():
    from emerge.dataset import document_accounting, join_labels

    spans = pl.DataFrame({"source": ["a", "a", "a", "b"], "span_idx": [0, 1, 2, 0],
                          "doc_id": ["a1", "a1", "a2", "b1"], "text_span": ["w", "x", "y", "z"]})
    labels = pl.DataFrame({"source": ["b", "a"], "span_idx": [0, 2], "cluster_id": [5, 7]})
    labelled, positions = join_labels(spans, labels)
    assert labelled["text_span"].to_list() == ["y", "z"] and labelled["cluster_id"].to_list() == [7, 5]
    assert positions.tolist() == [2, 3]  # rows of `spans`, so the vectors line up
    inventory = pl.DataFrame({"source": ["a", "a", "a", "a"], "doc_id": ["a1", "a2", "a3", "a4"],
                              "path": ["p"] * 4, "record": ["0"] * 4,
                              "status": ["kept", "kept", "kept", "skipped"], "reason": [None, None, None, "empty"]})
    other = pl.DataFrame({"source": ["b"], "doc_id": ["b1"], "path": ["q"], "record": ["0"], "status": ["kept"],
                          "reason": [None], "text": ["a column the other source lacks"]})
    fate = document_accounting([inventory, other], spans, dataset=labelled.filter(pl.col("doc_id") == "a2"))
    assert dict(zip(fate["doc_id"], fate["outcome"])) == {
        "a1": "no_span_selected", "a2": "in_dataset", "a3": "shorter_than_min_len", "a4": "empty",
        "b1": "no_span_selected"}
