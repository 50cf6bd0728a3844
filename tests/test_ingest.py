import json
import unicodedata

import polars as pl
import pytest

from emerge.config import IngestConfig
from emerge.errors import InputError
from emerge.ingest import inventory, kept_documents, read_source

GOOD = "Plant the tomato seedlings after the last frost when the soil is warm."


@pytest.fixture
def messy_source(tmp_path):
    src = tmp_path / "messy"
    src.mkdir()
    (src / "good.txt").write_text(GOOD)
    (src / "notes.md").write_text("# Title\n\nWater the roses early in the morning.")
    (src / "empty.txt").write_text("")
    (src / "blank.md").write_text("   \n\t\n")
    (src / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR")
    (src / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (src / "huge.txt").write_text("word " * 1_100_000)  # 5.5 MB
    (src / "dupe.txt").write_text(GOOD)
    (src / "image.png").write_bytes(b"\x89PNG")
    (src / "rows.jsonl").write_text("\n".join([
        json.dumps({"id": "a", "text": "Compost feeds the vegetable beds."}),
        '{"id": "b", "text": broken',
        json.dumps({"id": "c", "body": "no text field"}),
        json.dumps({"id": "d", "text": 42}),
        json.dumps(["not", "an", "object"]),
        "",
        json.dumps({"id": "a", "text": "same id again, different text"}),
    ]))
    (src / "table.csv").write_text('id,text\n1,"Bees visited the lavender."\n2,too,many,fields\n3,""\n')
    (src / "nocol.csv").write_text("id,body\n1,hello\n")
    pl.DataFrame({"id": ["p1", "p2"], "text": ["Prune apple trees in winter.", None]}).write_parquet(src / "t.parquet")
    sub = src / "nested"
    sub.mkdir()
    (sub / "deep.txt").write_text(unicodedata.normalize("NFD", "Crème brûlée needs a hot grill."))
    return src


def test_every_input_is_accounted_for(messy_source):
    result = read_source(messy_source)
    counts = result.skip_counts
    assert counts == {"binary": 1, "duplicate": 1, "duplicate_id": 1, "empty": 4, "invalid_text_type": 1,
                      "malformed_row": 3, "missing_text_field": 2, "too_long": 1, "undecodable": 1,
                      "unsupported_file_type": 1}
    kept = set(result.documents["path"] + "#" + result.documents["record"])
    # files are read in sorted order, so dupe.txt is the first copy and good.txt the duplicate
    assert kept == {"dupe.txt#", "notes.md#", "rows.jsonl#a", "table.csv#1", "t.parquet#p1", "nested/deep.txt#"}
    inv = inventory(result)
    assert inv.height == result.n_inputs == 6 + sum(counts.values())
    assert inv["doc_id"].null_count() == 0
    assert kept_documents(inv).height == 6


def test_unicode_is_normalised_and_ids_are_stable(messy_source):
    a = read_source(messy_source)
    b = read_source(messy_source)
    assert a.documents["doc_id"].to_list() == b.documents["doc_id"].to_list()
    deep = a.documents.filter(pl.col("path") == "nested/deep.txt")["text"][0]
    assert deep == unicodedata.normalize("NFC", deep) and "è" in deep
    assert a.documents["doc_id"].n_unique() == a.documents.height


def test_custom_fields_and_limits(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    (src / "x.jsonl").write_text(json.dumps({"key": "k1", "body": "Hello there, friend."}) + "\n")
    with pytest.raises(InputError, match=r"no usable document.*too_long"):
        read_source(src, config=IngestConfig(text_field="body", id_field="key", max_doc_chars=10))
    ok = read_source(src, config=IngestConfig(text_field="body", id_field="key"))
    assert ok.documents["record"].to_list() == ["k1"]


def test_source_with_nothing_usable_fails_clearly(tmp_path):
    src = tmp_path / "only_bad"
    src.mkdir()
    (src / "empty.txt").write_text("")
    with pytest.raises(InputError, match=r"no usable document.*'empty': 1"):
        read_source(src)


def test_empty_and_missing_folders_fail_clearly(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match="contains no files"):
        read_source(tmp_path / "nothing")
    with pytest.raises(InputError, match="does not exist"):
        read_source(tmp_path / "missing")


def test_jsonl_strings_may_contain_unicode_line_separators(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    text = "first part\u2028second part\x85third part"
    (src / "x.jsonl").write_text(json.dumps({"id": "a", "text": text}, ensure_ascii=False) + "\r\n"
                                 + json.dumps({"id": "b", "text": "plain"}) + "\n", encoding="utf-8")
    result = read_source(src)
    assert result.skip_counts == {}
    assert result.documents["text"].to_list() == [text, "plain"]


@pytest.fixture
def linked_source(tmp_path):
    """A source whose documents are partly behind symlinks, with every awkward kind of link."""
    outside = tmp_path / "shared_docs"
    outside.mkdir()
    (outside / "linked.txt").write_text("Soak the beans overnight before cooking them slowly.")
    src = tmp_path / "linked"
    (src / "a").mkdir(parents=True)
    (src / "a" / "own.txt").write_text(GOOD)
    (src / "b_shared").symlink_to(outside, target_is_directory=True)   # a folder kept elsewhere
    (src / "c_again").symlink_to(src / "a", target_is_directory=True)  # the same folder twice
    (src / "a" / "up").symlink_to(src, target_is_directory=True)       # a loop back to the root
    (src / "copy.txt").symlink_to(src / "a" / "own.txt")               # the same file twice
    (src / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")        # a broken link
    return src


def test_symlinked_folders_are_read_once_and_every_link_is_accounted_for(linked_source):
    from emerge.validation import unaccounted_files

    result = read_source(linked_source)
    assert sorted(result.documents["path"]) == ["a/own.txt", "b_shared/linked.txt"]
    reasons = dict(zip(result.skipped["path"], result.skipped["reason"]))
    assert reasons == {"a/up": "symlink_loop", "c_again": "same_folder", "copy.txt": "same_file",
                       "dangling.txt": "broken_link"}
    inv = inventory(result)
    assert unaccounted_files(linked_source, inv) == []
    # the check lists entries on its own: a reader that dropped the linked folder is caught
    dropped = inv.filter(~pl.col("path").str.starts_with("b_shared"))
    assert unaccounted_files(linked_source, dropped) == ["b_shared/linked.txt"]
    assert unaccounted_files(linked_source, inv.filter(pl.col("path") != "c_again")) == ["c_again/"]


def test_preflight_reports_unusable_sources_and_keeps_the_rest(tmp_path):
    from emerge.ingest import preflight_sources

    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "a.txt").write_text(GOOD)
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "b.txt").write_text("   ")
    usable, problems = preflight_sources({n: tmp_path / n for n in ("blank", "empty", "good", "gone")})
    assert usable == ["good"]
    assert set(problems) == {"blank", "empty", "gone"}
    assert "contains no files" in problems["empty"] and "'gone'" in problems["gone"]
    assert "empty" in problems["blank"]  # the skip reason is named
