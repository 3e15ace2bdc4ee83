"""One atomic-write helper: a reader sees the old file or the whole new one, never a part."""

import pytest

from bigbatch.trainer.atomic import atomic_open, link_atomic, write_atomic, write_json_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"status": "finished"})
    with pytest.raises(RuntimeError), atomic_open(path, "w") as f:
        f.write('{"status": "runn')
        raise RuntimeError("killed mid-write")
    assert path.read_text() == '{\n  "status": "finished"\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_writes_replace_whole_files_and_links_replace_links(tmp_path):
    write_atomic(tmp_path / "a", b"first")
    write_atomic(tmp_path / "a", "second")
    assert (tmp_path / "a").read_text() == "second"
    write_atomic(tmp_path / "b", "other")
    link_atomic(tmp_path / "a", tmp_path / "best")
    link_atomic(tmp_path / "b", tmp_path / "best")
    assert (tmp_path / "best").read_text() == "other" and (tmp_path / "best").stat().st_ino == (tmp_path / "b").stat().st_ino
