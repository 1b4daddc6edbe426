"""The real-music genre study end to end, tiny (issue 17, item 5): three excerpts of gunroar-data
(which .ci/run installs), two musicnn taggers with different tag sets through the genre view, a
shallow search. Skips cleanly without the musicnn wheel, the converters or the package."""

import importlib.util
import json

import numpy as np
import pytest

from jsuff.app.music import MusicSettings, MusicStudyError, missing_packages, run_music_study
from jsuff.app.musicdata import GENRE_CLASSES, check_models, genre_view
from jsuff.app.study import load_arrays, load_config

MODELS = ("MTT_vgg", "MSD_vgg")
TINY = MusicSettings(
    models=MODELS, packages=("gunroar-data",), per_genre=3, seconds=3.0, iters=1, tree_depth=2,
    min_box_size=2000, chunk_size=2000, prefixes_per_call=16, max_batch=16, clips_per_batch=3, n_boot=50,
)  # fmt: skip


def _skip_unless_ready() -> None:
    if importlib.util.find_spec("musicnn") is None:
        pytest.skip("the musicnn wheel is not installed (make setup-real)")
    try:
        import converters  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the converters package cannot be imported: {e}")
    if missing_packages(TINY.packages):
        pytest.skip("the Debian package gunroar-data is not installed (apt-get install gunroar-data)")


def test_tiny_genre_study(tmp_path):
    _skip_unless_ready()
    out = tmp_path / "music"
    result = run_music_study(out, TINY, quiet=True)
    cfg = load_config(out / "study.toml")
    assert [m.name for m in cfg.models] == list(MODELS)
    assert cfg.labels == genre_view(MODELS) and cfg.search.iters == 1 and cfg.extract.chunk_size == 2000
    arrays = load_arrays(result.study_dir)
    assert arrays.label_names == GENRE_CLASSES and arrays.model_names == MODELS
    assert arrays.true.tolist() == [GENRE_CLASSES.index("electronic")] * 3
    # the study's labels on the excerpts are those of the package check, an independent path
    check = check_models(out / "data" / "manifest.csv", {m: out / "models" / m for m in MODELS})
    for mi, m in enumerate(MODELS):
        np.testing.assert_array_equal(arrays.original[mi], check.pred[m], err_msg=m)
        v = arrays.valid[mi]
        np.testing.assert_array_equal(arrays.labels[mi, mi][v], arrays.original[mi][v])
    record = json.loads((result.study_dir / "study.json").read_text())
    assert [r["model"] for r in record["label_view"]] == list(MODELS)
    page = result.report.read_text()
    assert "Label view" in page and "techno" in page and "electronica" in page
    assert "Transfer matrix" in result.text and "Seconds:" in result.text
    # a rerun resumes (the excerpts are not rebuilt); other excerpt settings are refused
    stamp = (out / "data" / "manifest.csv").stat().st_mtime_ns
    again = run_music_study(out, TINY, report=False, quiet=True)
    assert (out / "data" / "manifest.csv").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(load_arrays(again.study_dir).labels, arrays.labels)
    with pytest.raises(MusicStudyError, match="rerun with --fresh"):
        run_music_study(out, MusicSettings(**{**TINY.__dict__, "per_genre": 2}), report=False, quiet=True)


def test_missing_packages_are_named_before_any_work(tmp_path):
    (tmp_path / "dpkg").mkdir()
    (tmp_path / "dpkg" / "status").write_text("")  # a dpkg database with nothing installed
    assert missing_packages(("gunroar-data",), dpkg_root=tmp_path / "dpkg") == ["gunroar-data"]
    with pytest.raises(MusicStudyError, match=r"package gunroar-data is not installed.*apt-get install gunroar-data"):
        run_music_study(tmp_path / "out", TINY, dpkg_root=tmp_path / "dpkg", quiet=True)
    assert not (tmp_path / "out").exists()


def test_cli_music_and_demo_music(monkeypatch, tmp_path, capsys):
    import jsuff.app.music as music
    from jsuff.app.cli import main

    calls = []

    def fake(out, settings, **kw):
        calls.append((str(out), settings, kw))
        if settings.iters == 99:
            raise MusicStudyError("the genre study needs the soundtrack package gunroar-data ...")
        return music.MusicResult(tmp_path, tmp_path / "study", None, "summary text", {})

    monkeypatch.setattr(music, "run_music_study", fake)
    assert main(["music", "--out", str(tmp_path / "m"), "--iters", "3", "--chunk", "100"]) == 0
    out, settings, kw = calls[-1]
    assert out == str(tmp_path / "m") and kw["fresh"] is False and kw["report"] is True
    assert settings == MusicSettings(iters=3, chunk_size=100)
    assert "summary text" in capsys.readouterr().out
    assert main(["demo", "--music", "--quick", "--fresh"]) == 0
    out, settings, kw = calls[-1]
    assert out == "runs/music" and settings == music.QUICK and kw["fresh"] is True
    assert main(["music", "--iters", "99", "--quiet", "--no-report"]) == 2
    assert calls[-1][2]["report"] is False and calls[-1][2]["quiet"] is True
    assert "jsuff music: the genre study needs" in capsys.readouterr().err
    # numbers the study cannot use are refused when parsed, before any conversion or excerpt
    n = len(calls)
    for flag, bad in (("--iters", "0"), ("--per-genre", "-1"), ("--depth", "x"), ("--chunk", "0")):
        with pytest.raises(SystemExit):
            main(["music", flag, bad])
        assert "expected a" in capsys.readouterr().err
    assert len(calls) == n
