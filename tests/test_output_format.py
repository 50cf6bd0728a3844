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
