"""Excerpts of real recorded music from Debian soundtrack packages (jsuff.app.musicdata).

Most tests build a fake dpkg database in a temporary folder (a status file, ``info/*.list`` and
OGG Vorbis files written by libsndfile), so they run anywhere. One test uses a real package,
``gunroar-data`` (4.9 MB, BSD-2-Clause, installed by .ci/run), and skips cleanly without it.
"""

from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from jsuff.app import musicdata as md
from jsuff.audio import load_audio
from jsuff.labels import LabelView
from jsuff.models.musicnn import MIN_SAMPLES, headroom, log_mel

ROOT = Path(__file__).resolve().parents[1]


def _tone(freq: float, seconds: float, sr: int, amp: float) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def fake_dpkg(tmp: Path, packages: dict[str, dict[str, np.ndarray]], sr: int = 22050) -> Path:
    """A dpkg root where each package is installed with the given OGG files (name -> stereo audio)."""
    root = tmp / "dpkg"
    (root / "info").mkdir(parents=True)
    status = []
    for pkg, files in packages.items():
        paths = []
        for rel, audio in files.items():
            p = tmp / "usr" / "share" / pkg / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(p), audio, sr, format="OGG", subtype="VORBIS")
            paths.append(str(p))
        (root / "info" / f"{pkg}.list").write_text("\n".join([str(tmp / "usr"), *paths]) + "\n")
        status.append(f"Package: {pkg}\nStatus: install ok installed\nVersion: 1.0-{len(pkg)}\n")
    status.append("Package: removed-music\nStatus: deinstall ok config-files\nVersion: 9\n")
    (root / "status").write_text("\n".join(status))
    return root


def stereo(x: np.ndarray) -> np.ndarray:
    return np.stack([x, x], axis=1)


@pytest.fixture
def fake(tmp_path):
    sr = 22050
    loud = stereo(_tone(220.0, 20.0, sr, 0.8))  # overflows musicnn's float16 at this level
    quiet = stereo(_tone(440.0, 20.0, sr, 0.01))  # -43 dBFS: quiet, not silent; scaled up
    gap = _tone(330.0, 20.0, sr, 0.5)
    gap[int(9.5 * sr) : int(14.0 * sr)] = 0  # the first offset tried (10.125 s) is silent
    stem = stereo(_tone(1760.0, 20.0, sr, 0.3))
    root = fake_dpkg(
        tmp_path,
        {
            "loud-music": {"music/a.ogg": loud, "music/b.ogg": quiet, "sfx/boom.ogg": loud[: sr // 2]},
            "gap-music": {"music/gap.ogg": stereo(gap)},
            "stem-music": {"songs/one/song.ogg": loud, "songs/one/guitar.ogg": stem},
        },
        sr,
    )
    docs = tmp_path / "doc" / "loud-music"
    docs.mkdir(parents=True)
    (docs / "copyright").write_text("Copyright: nobody\nLicense: CC0-1.0\n")
    sources = (
        md.Source("loud-music", "CC0-1.0", "*/loud-music/music/*.ogg", "rock", "test tones"),
        md.Source("gap-music", "CC0-1.0", "*/gap-music/music/*.ogg", None, "no label"),
        md.Source("stem-music", "CC0-1.0", "*/stem-music/songs/*/song.ogg", "metal", "stems", ("guitar.ogg",)),
    )
    return root, tmp_path / "doc", sources


def read_rows(manifest: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(manifest.read_text().splitlines()))


# ----------------------------------------------------------------------------------------------
# Installed packages
# ----------------------------------------------------------------------------------------------


def test_installed_packages_and_files(fake):
    root, _, sources = fake
    assert md.installed_packages(root) == {"loud-music": "1.0-10", "gap-music": "1.0-9", "stem-music": "1.0-10"}
    tracks = md.find_tracks(sources[0], root)
    assert [t.files[0].name for t in tracks] == ["a.ogg", "b.ogg"]  # not sfx/boom.ogg
    assert tracks[0].sample_rate == 22050 and tracks[0].seconds == pytest.approx(20.0)
    stem = md.find_tracks(sources[2], root)[0]
    assert [f.name for f in stem.files] == ["song.ogg", "guitar.ogg"]


def test_missing_package_says_how_to_install(fake):
    root, _, _ = fake
    src = md.Source("removed-music", "X", "*", "rock", "", size_mb=3.0)
    with pytest.raises(md.MusicDataError, match=r"'removed-music' is not installed \(apt-get install removed-music"):
        md.find_tracks(src, root)
    src = md.Source("loud-music", "X", "*/nothing/*.ogg", "rock", "")
    with pytest.raises(md.MusicDataError, match="no files matching"):
        md.find_tracks(src, root)


# ----------------------------------------------------------------------------------------------
# The level rule
# ----------------------------------------------------------------------------------------------


def test_normalise_sets_the_headroom_and_caps_the_peak():
    loud = _tone(220.0, 3.2, 16000, 0.8)
    assert float(headroom(jnp.asarray(loud)[None])[0]) < 1  # the package would overflow here
    with pytest.raises(md.MusicDataError, match=r"\+inf"):
        md.check_excerpt(loud)
    for x in (loud, _tone(440.0, 3.2, 16000, 1e-4)):  # scaled down and up
        y, gain = md.normalise(x, margin=1.25)
        assert float(headroom(jnp.asarray(y)[None])[0]) == pytest.approx(1.25, rel=1e-4)
        assert md.check_excerpt(y, margin=1.25) == pytest.approx(1.25, rel=1e-4)
        np.testing.assert_allclose(y, x * np.float32(gain), rtol=1e-6)
        assert bool(jnp.all(jnp.isfinite(log_mel(jnp.asarray(y)[None]))))
    # one click: little mel energy, so the sample peak (0.99) limits the gain instead
    click = np.zeros(51200, np.float32)
    click[1000] = 0.01
    y, _ = md.normalise(click, margin=1.25)
    assert float(np.abs(y).max()) == pytest.approx(0.99, rel=1e-6)
    assert md.check_excerpt(y, 1.25) > 1.25
    with pytest.raises(md.MusicDataError, match="silent"):
        md.normalise(np.zeros(51200, np.float32))
    with pytest.raises(md.MusicDataError, match="below the margin"):
        md.check_excerpt(md.normalise(loud, margin=1.1)[0], margin=1.25)
    with pytest.raises(md.MusicDataError, match="shorter than one musicnn patch"):
        md.check_excerpt(np.ones(MIN_SAMPLES - 1, np.float32))


def test_offsets_cover_the_middle_and_spread_is_a_permutation():
    offs = md.plan_offsets(100.0, 3.0, 4)
    assert offs[0] > 10.0 and offs[-1] + 3.0 < 90.0 and offs == sorted(offs)
    assert md.plan_offsets(3.5, 3.0, 2) == []  # too short for the middle 80%
    few = md.plan_offsets(20.0, 3.0, 50)  # 13 s to spread over: 4 excerpts without overlap
    assert len(few) == 4 and min(np.diff(few)) >= 3.0
    for k in range(1, 20):
        order = md._spread(k)
        assert sorted(order) == list(range(k))
    assert md._spread(4)[0] == 2  # the middle first


# ----------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------


def test_build_writes_clips_manifest_and_licences(fake, tmp_path):
    root, docs, sources = fake
    out = tmp_path / "out"
    manifest = md.build_excerpts(
        out, packages=["loud-music", "gap-music", "stem-music"], per_genre=3, seconds=3.0,
        sources=sources, dpkg_root=root, doc_root=docs,
    )  # fmt: skip
    rows = read_rows(manifest)
    assert tuple(rows[0]) == md.MANIFEST_FIELDS
    assert [r["label"] for r in rows] == ["metal"] * 3 + [""] * 3 + ["rock"] * 3  # groups sorted
    assert {r["package"] for r in rows if r["label"] == "rock"} == {"loud-music"}
    assert {Path(r["source"].split("+")[0]).name for r in rows if r["label"] == "rock"} == {"a.ogg", "b.ogg"}
    assert all(r["licence"] == "CC0-1.0" and r["version"].startswith("1.0-") for r in rows)
    for r in rows:
        assert re.fullmatch(r"clips/\d{3}_[A-Za-z0-9-]+_[A-Za-z0-9-]+_\d{7}\.wav", r["path"])
        x, sr = load_audio(out / r["path"])
        assert sr == 16000 and x.shape == (48000,)
        assert float(headroom(jnp.asarray(x)[None])[0]) >= 1.25 * (1 - 1e-4)
        assert float(r["headroom"]) >= 1.25 * (1 - 1e-4)
    # the silent middle of gap.ogg was skipped for the next offsets in bisection order
    offsets = md.plan_offsets(20.0, 3.0, 5)  # 3 wanted from 1 track: 3 + 2 spares; 4 fit
    assert offsets == [3.625, 6.875, 10.125, 13.375] and md._spread(4) == [2, 1, 3, 0]
    gap_offsets = [float(r["offset_s"]) for r in rows if r["package"] == "gap-music"]
    assert gap_offsets == [6.875, 13.375, 3.625]
    # stems are mixed: the 1760 Hz guitar stem is in the excerpt with the 220 Hz song
    metal, _ = load_audio(out / rows[0]["path"])
    spec = np.abs(np.fft.rfft(metal))
    freqs = np.fft.rfftfreq(len(metal), 1 / 16000)
    assert spec[np.argmin(np.abs(freqs - 1760))] > 0.1 * spec.max()
    assert rows[0]["source"].endswith("one/guitar.ogg")
    assert (out / "licences" / "loud-music.txt").read_text().startswith("Copyright: nobody")
    # deterministic: a second build gives the same samples (the WAV headers differ: libsndfile's PEAK
    # chunk holds a time stamp)
    again = md.build_excerpts(
        tmp_path / "again", packages=["loud-music", "gap-music", "stem-music"], per_genre=3, seconds=3.0,
        sources=sources, dpkg_root=root, doc_root=docs,
    )  # fmt: skip
    assert read_rows(again) == rows
    for r in rows:
        np.testing.assert_array_equal(load_audio(out / r["path"])[0], load_audio(tmp_path / "again" / r["path"])[0])


def test_build_errors(fake, tmp_path):
    root, docs, sources = fake
    kw = dict(sources=sources, dpkg_root=root, doc_root=docs)
    with pytest.raises(md.MusicDataError, match="not in the recipe: 'nope'"):
        md.build_excerpts(tmp_path / "o1", packages=["nope"], **kw)
    with pytest.raises(md.MusicDataError, match="at least 2.976 s"):
        md.build_excerpts(tmp_path / "o2", packages=["loud-music"], seconds=2.9, **kw)
    with pytest.raises(md.MusicDataError, match="only .* usable excerpts"):
        md.build_excerpts(tmp_path / "o3", packages=["stem-music"], per_genre=50, **kw)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(md.MusicDataError, match="not empty"):
        md.build_excerpts(full, packages=["loud-music"], per_genre=1, **kw)
    assert (full / "keep.txt").read_text() == "mine"


def test_cli_sources_and_build_error(capsys, tmp_path):
    assert md.main(["sources"]) == 0
    out = capsys.readouterr().out
    assert "fretsonfire-songs-muldjord" in out and "CC-BY-SA-3.0" in out
    assert md.main(["build", str(tmp_path / "x"), "--packages", "no-such-package"]) == 2
    assert "not in the recipe" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# The genre view and checking models
# ----------------------------------------------------------------------------------------------


def test_genre_view_is_the_documented_one_and_fits_the_tag_lists():
    view = md.genre_view()
    assert len(view.classes) >= 5
    doc = (ROOT / "docs" / "music_study.md").read_text()
    assert md.genre_view_toml() in doc  # the docs show exactly the view the code uses
    spec = importlib.util.find_spec("musicnn")
    if spec is None:
        pytest.skip("the musicnn package is not installed (make setup-real)")
    from converters.musicnn import read_tag_lists

    tags = read_tag_lists(Path(spec.submodule_search_locations[0]) / "configuration.py")
    models = {m: tags[m.split("_")[0]] for m in ("MTT_musicnn", "MTT_vgg", "MSD_musicnn", "MSD_vgg")}
    from jsuff.labels import resolve_views

    views = resolve_views(view, models)
    electronic = views["MSD_vgg"].tags[view.classes.index("electronic")]
    assert electronic == ("electronic", "electronica", "electro", "House", "dance")
    assert views["MTT_musicnn"].tags[view.classes.index("metal")] == ("metal",)  # the same-name default


def test_genre_view_for_other_names():
    view = md.genre_view(["MSD_big", "MTT_a"])
    assert [m for m, _ in view.maps] == ["MSD_big", "MTT_a"]
    with pytest.raises(md.MusicDataError, match="start with the tag set, MTT_ or MSD_"):
        md.genre_view(["vgg"])
    with pytest.raises(md.MusicDataError, match="letters, digits"):
        md.genre_view(['MTT_a]\nx = "'])  # never pasted into the TOML text


def test_genre_check_counts():
    check = md.GenreCheck(("a", "b", "c"), ("a", "a", "b", "x", ""), {"m": np.array([0, 1, 1, 2, 2])})
    assert check.true.tolist() == [0, 0, 1, -1, -1]
    assert check.accuracy("m") == pytest.approx(2 / 3)
    assert check.confusion("m").tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert check.outside("m") == {"x": {"c": 1}, "(no label)": {"c": 1}}
    assert "m: accuracy 0.667" in check.format()


def test_check_models_on_a_random_tagger(fake, tmp_path):
    from jsuff.labels import resolve_views
    from jsuff.models.base import build_model, save_model

    root, docs, sources = fake
    manifest = md.build_excerpts(tmp_path / "clips", packages=["loud-music", "stem-music"], per_genre=2,
                                 seconds=3.0, sources=sources, dpkg_root=root, doc_root=docs)  # fmt: skip
    tags = ("rock", "guitar", "metal", "techno")
    model = build_model("musicnn_vgg", {"num_classes": 4, "filters": 4}, sample_rate=16000, labels=tags, seed=3)
    save_model(model, tmp_path / "m")
    view = LabelView.from_toml({"classes": ["rock", "metal"], "map": {"tagger": {"metal": ["metal", "techno"]}}})
    check = md.check_models(manifest, {"tagger": tmp_path / "m"}, view=view, batch=3)  # 4 clips: one padded
    mv = resolve_views(view, {"tagger": tags})["tagger"]
    rows = read_rows(manifest)
    xs = np.stack([load_audio(tmp_path / "clips" / r["path"])[0] for r in rows])
    direct = np.asarray(mv.labels(model.apply(model.params, jnp.asarray(xs))))
    np.testing.assert_array_equal(check.pred["tagger"], direct)
    assert check.labels == tuple(r["label"] for r in rows)


# ----------------------------------------------------------------------------------------------
# A real package (CI installs it in .ci/run)
# ----------------------------------------------------------------------------------------------


def test_real_soundtrack_package(tmp_path):
    if "gunroar-data" not in md.installed_packages():
        pytest.skip("gunroar-data is not installed (apt-get install gunroar-data; .ci/run does)")
    manifest = md.build_excerpts(tmp_path / "out", packages=["gunroar-data"], per_genre=3, seconds=3.0)
    rows = read_rows(manifest)
    assert len(rows) == 3 and {r["label"] for r in rows} == {"electronic"}
    assert {r["licence"] for r in rows} == {"BSD-2-Clause"}
    assert len({r["source"] for r in rows}) == 3  # three different tracks
    for r in rows:
        assert r["source"].startswith("/usr/share/games/gunroar/") and r["source"].endswith(".ogg")
        x, sr = load_audio(tmp_path / "out" / r["path"])
        assert sr == 16000 and x.shape == (48000,)
        assert md.rms_dbfs(x) > md.SILENCE_DBFS
        assert md.check_excerpt(x) >= 1.25 * (1 - 1e-4)
    assert "Kenta Cho" in (tmp_path / "out" / "licences" / "gunroar-data.txt").read_text()
