import numpy as np
import polars as pl

from emerge.frames import owning_strings


def test_owning_strings_keeps_every_value_and_dtype(tmp_path):
    """The copy changes no value, null, dtype or column order, strings filtered out of a scan included."""
    frame = pl.DataFrame({"doc_id": ["a", None, "c" * 40, "d"], "n": [1, 2, 3, 4],
                          "embedding": pl.Series(np.ones((4, 3), np.float16), dtype=pl.Array(pl.Float16, 3)),
                          "text_span": ["x" * 100, "short", "", "é ünïcode " * 20]})
    frame.write_parquet(tmp_path / "f.parquet")
    filtered = pl.scan_parquet(tmp_path / "f.parquet").filter(pl.col("n") > 1).collect()
    owned = owning_strings(filtered)
    assert owned.schema == filtered.schema and owned.equals(filtered)
    assert owned["doc_id"].null_count() == 1


def test_owning_strings_leaves_frames_without_strings_or_rows_as_they_are():
    numbers = pl.DataFrame({"n": [1, 2]})
    assert owning_strings(numbers) is numbers
    empty = pl.DataFrame(schema={"text_span": pl.String})
    assert owning_strings(empty) is empty
