"""Atomic writes: a killed write leaves the old file or folder, never half a new one."""

import pytest

from emerge.atomic import atomic_write, atomic_write_dir, leftover_temps


def test_killed_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out" / "data.parquet"

    def dies_mid_write(tmp):
        tmp.write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies_mid_write)
    assert not target.exists() and list(target.parent.iterdir()) == []
    atomic_write(target, lambda p: p.write_bytes(b"v1"))
    with pytest.raises(RuntimeError):
        atomic_write(target, lambda p: (p.write_bytes(b"v2-partial"), (_ for _ in ()).throw(RuntimeError())))
    assert target.read_bytes() == b"v1" and list(target.parent.iterdir()) == [target]


def test_killed_folder_write_keeps_the_old_folder(tmp_path):
    target = tmp_path / "clustering"
    atomic_write_dir(target, lambda d: (d / "pipeline.json").write_text("old"))

    def dies(d):
        (d / "models.joblib").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write_dir(target, dies)
    assert (target / "pipeline.json").read_text() == "old" and not (target / "models.joblib").exists()
    assert not leftover_temps(tmp_path)
