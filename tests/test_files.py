"""jsuff._files: atomic writes keep the old file whole when a write fails."""

import json

import pytest

from jsuff._files import atomic_write, write_json, write_text


def test_write_text_and_json_replace_the_file(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_json(path, {"b": 2, "a": 1})
    assert path.read_text() == '{\n  "a": 1,\n  "b": 2\n}\n'
    write_text(path, "new\n")
    assert path.read_text() == "new\n"
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"kept": True})

    def fails(f):
        f.write(b"half a fi")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fails)
    assert json.loads(path.read_text()) == {"kept": True}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
