"""The command line (issue 16): --version, explain's options (named as the TOML keys, defaults in
--help, --mode, --target, --json, a summary by default, --out refused when not empty), the
summary.json it writes, `jsuff models`' header, `report --help`, `convert`'s --overwrite wording,
and `jsuff study`'s progress off a terminal."""

import json
import logging

import numpy as np
import pytest
import soundfile as sf

import jsuff
from jsuff.app import study as study_mod
from jsuff.app.cli import build_parser, main
from jsuff.app.progress import Progress
from jsuff.app.versions import software_versions
from jsuff.models import InputPolicy, build_model, save_model
from jsuff.search import SearchConfig

SR = 8000
LABELS = ["low", "high"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A band-power model (low: 200-500 Hz, high: 2.2-3 kHz) and a clip that is mostly high."""
    root = tmp_path_factory.mktemp("cli")
    model = build_model("bandpower", {"bands": [[200, 500], [2200, 3000]], "sample_rate": SR}, sample_rate=SR,
                        labels=LABELS, input=InputPolicy(length=SR // 4))
    save_model(model, root / "model")
    t = np.arange(SR // 4) / SR
    x = 0.2 * np.sin(2 * np.pi * 300 * t) + 0.5 * np.sin(2 * np.pi * 2600 * t)
    sf.write(root / "clip.wav", x.astype(np.float32), SR)
    return root


def _explain(toy, out, *extra):
    return main(["explain", str(toy / "model"), str(toy / "clip.wav"), "--out", str(out),
                 "--iters", "2", "--tree-depth", "3", "--min-box-size", "8", *extra])


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    line = capsys.readouterr().out.strip()
    v = software_versions()
    assert line.startswith(f"jsuff {jsuff.__version__} (") and "\n" not in line
    for name in ("jax", "flax", "python"):
        assert f"{name} {v[name]}" in line


def test_explain_help_shows_defaults_and_toml_names(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    raw = capsys.readouterr().out
    text = " ".join(raw.split())
    entries = {}  # each option's help entry: its lines up to the next option
    for line in raw[raw.index("options:"):].splitlines()[1:]:
        if line.startswith("  -"):
            key = line.split()[0].rstrip(",")
            entries[key] = ""
        entries[key] += " " + line.strip()
    d = SearchConfig()
    assert "--tree-depth N, --depth N" in text and "--min-box-size N, --min-box N" in text
    for opt, default in (("--domain", "rfft"), ("--iters", d.iters), ("--tree-depth", d.tree_depth),
                         ("--min-box-size", d.min_box_size), ("--mode", "sufficient"), ("--seed", 0)):
        assert f"(default: {default})" in entries[opt], (opt, entries[opt])
    assert "--target LABEL" in text and "--json" in text and "--overwrite" in text
    parser = build_parser()
    for spelling in (["--depth", "3", "--min-box", "8"], ["--tree-depth", "3", "--min-box-size", "8"]):
        args = parser.parse_args(["explain", "m", "a.wav", "--out", "o", *spelling])
        assert (args.tree_depth, args.min_box_size) == (3, 8)


def test_explain_prints_a_summary_and_writes_a_complete_summary_json(toy, tmp_path, capsys):
    out = tmp_path / "e"
    assert _explain(toy, out) == 0
    text = capsys.readouterr().out
    assert "{" not in text and len(text.splitlines()) <= 6
    assert "clip.wav: the model says 'high'" in text and "verified: yes" in text and "of 1001 bins" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["label"] == "high" and summary["target"] == 1
    assert summary["audio"] == str((toy / "clip.wav").resolve())
    assert summary["model"] == str((toy / "model").resolve())
    assert {p.name for p in out.iterdir()} == {"summary.json", "sufficient.wav", "arrays.npz", "explanation.png"}

    # a second run into the same folder is refused, before any work, unless --overwrite
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert _explain(toy, out) == 2
    err = capsys.readouterr().err
    assert err.startswith("jsuff: error: --out") and "not empty" in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    (tmp_path / "a_file").write_text("x")
    assert _explain(toy, tmp_path / "a_file") == 2
    assert "is a file" in capsys.readouterr().err

    # --overwrite, --json (the summary.json itself), --target by name and --mode
    assert _explain(toy, out, "--overwrite", "--json", "--target", "low", "--mode", "contrastive") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "summary.json").read_text())
    assert printed["label"] == "low" and printed["target"] == 0 and printed["mode"] == "contrastive"


def test_explain_target_errors_name_the_labels(toy, tmp_path, capsys):
    assert _explain(toy, tmp_path / "x", "--target", "violin") == 2
    err = capsys.readouterr().err
    assert "--target 'violin' is not one of the model's labels: low, high (or 0..1)" in err
    assert not (tmp_path / "x").exists()


def test_explain_reports_its_cost_and_progress_on_stderr_unless_quiet(toy, tmp_path, capsys):
    assert _explain(toy, tmp_path / "talk") == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("explain: 1 clip of 0.25 s (2,000 samples), rfft grid 1,001 cells; search up to ")
    assert "estimated " in err[0] and err[-1].startswith("explain: done (") and "1/1 clips" in err[-1]
    assert any(line.startswith("explain: searching 1 clip") and "ETA" in line for line in err)
    assert _explain(toy, tmp_path / "quiet", "--quiet") == 0
    assert capsys.readouterr().err == ""


def test_explain_estimate_says_the_cost_and_stops(toy, tmp_path, capsys):
    assert main(["explain", str(toy / "model"), str(toy / "clip.wav"), "--estimate", "--iters", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 clip of 0.25 s (2,000 samples), rfft grid 1,001 cells; search up to 868 model queries")
    assert "estimated " in out
    assert main(["explain", str(toy / "model"), str(toy / "clip.wav"), "--estimate", "--json",
                 "--out", str(tmp_path / "x")]) == 0
    cost = json.loads(capsys.readouterr().out)
    assert cost["grid_shape"] == [1001] and cost["seconds"] > 0 and not (tmp_path / "x").exists()
    assert main(["explain", str(toy / "model"), str(toy / "clip.wav")]) == 2
    assert "--out DIR is required (or --estimate" in capsys.readouterr().err


def test_explain_warns_about_a_huge_grid_on_one_line(toy, tmp_path, capsys, monkeypatch):
    import jsuff.cost

    monkeypatch.setattr(jsuff.cost, "LARGE_GRID_CELLS", 100)  # the clip's 1,001 bins count as huge
    assert _explain(toy, tmp_path / "w", "--quiet") == 0
    err = capsys.readouterr().err
    assert err.startswith("jsuff: warning: RFFT makes a grid of 1,001 cells for a clip of 2,000 samples, more than 100 "
                          "cells") and len(err.splitlines()) == 1


def test_models_prints_a_header(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["architecture", "convert", "description"]
    assert any(line.split()[:2] == ["bandpower", "no"] for line in lines[1:])


def test_report_help_explains_its_argument_and_default(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "DIR a study's output directory (the --out of `jsuff study`)" in text
    assert "(default: 6)" in text and "every clip" in text
    with pytest.raises(SystemExit):
        main(["report", "somewhere", "--max-clips", "-1"])
    assert "expected a number >= 0" in capsys.readouterr().err


def test_convert_refusal_names_the_cli_flag(tmp_path, capsys):
    dest = tmp_path / "model"
    dest.mkdir()
    (tmp_path / "ckpt.pth").write_bytes(b"whatever")
    assert main(["convert", str(tmp_path / "ckpt.pth"), "--arch", "melcnn", "--out", str(dest)]) == 2
    err = capsys.readouterr().err
    assert "already exists (pass --overwrite to replace it)" in err and "overwrite=True" not in err


# ---------------------------------------------------------------------------------------------
# Progress off a terminal


class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_progress_lines_off_a_terminal(capsys):
    clock = _Clock()
    bar = Progress(40, "explaining", None, interval=30, clock=clock)
    for _ in range(10):
        clock.t += 10
        bar.update(4)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "explaining: 0/40 clips (0%)",
        "explaining: 4/40 clips (10%), 10s elapsed, ETA 1m30s",  # the first unit, then every 30 s
        "explaining: 16/40 clips (40%), 40s elapsed, ETA 1m00s",
        "explaining: 28/40 clips (70%), 1m10s elapsed, ETA 30s",
        "explaining: 40/40 clips (100%), 1m40s elapsed",
    ]


def test_progress_goes_through_logging_when_it_is_set_up(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="jsuff.study"):
        bar = Progress(2, "explaining", None, interval=0)
        bar.update(1)
        bar.update(1)
        bar.close()
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "explaining: 0/2 clips (0%)", "explaining: 1/2 clips (50%)", "explaining: 2/2 clips (100%)"]
    assert all(r.name == "jsuff.study" for r in caplog.records)
    assert capsys.readouterr().err == ""


def test_progress_quiet_is_silent(capsys, caplog):
    with caplog.at_level(logging.INFO, logger="jsuff.study"):
        bar = Progress(3, "explaining", True, interval=0)
        bar.update(3)
        bar.close()
    assert capsys.readouterr().err == "" and not caplog.records and bar.done == 3


@pytest.mark.parametrize("flags, quiet", [([], None), (["--quiet"], True)])
def test_study_quiet_flag_reaches_the_study(monkeypatch, tmp_path, flags, quiet):
    seen = {}

    class Stop(Exception):
        pass

    def fake_run(cfg, out, *, resume, quiet, processes):
        seen["quiet"], seen["processes"] = quiet, processes
        raise Stop

    monkeypatch.setattr(study_mod, "run_study", fake_run)
    toml = tmp_path / "s.toml"
    toml.write_text('task = "t"\nmodels = ["a", "b"]\n[data]\npath = "d"\n')
    with pytest.raises(Stop):
        main(["study", str(toml), "--out", str(tmp_path / "o"), *flags])
    assert seen["quiet"] is quiet
    assert seen["processes"].count == 1  # a plain run joins no cluster


def test_duration_format():
    from jsuff.progress import duration

    assert [duration(s) for s in (0.4, 59.6, 61, 3599, 3600, 7384)] == ["0s", "1m00s", "1m01s", "59m59s", "1h00m", "2h03m"]


def test_explain_stopping_options_reach_the_search(toy, tmp_path, capsys):
    d = SearchConfig()
    parser = build_parser()
    args = parser.parse_args(["explain", "m", "a.wav", "--out", "o"])
    assert (args.round_iters, args.stop_cells, args.stop_overlap, args.no_stop) == (
        d.round_iters, d.stop_cells, d.stop_overlap, False)
    for bad in ("1.5", "0", "x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["explain", "m", "a.wav", "--stop-overlap", bad])
        assert "expected a number in (0, 1]" in capsys.readouterr().err
    # --no-stop walks every iteration; each of the three options changes where this clip stops (with
    # the default of any one of them it walks 4 iterations, with all three given 2), as in the library
    assert _explain(toy, tmp_path / "all", "--iters", "12", "--no-stop", "--quiet") == 0
    assert json.loads((tmp_path / "all" / "summary.json").read_text())["search_iterations"] == 12
    assert _explain(toy, tmp_path / "stop", "--iters", "12", "--round-iters", "1", "--stop-cells", "50",
                    "--stop-overlap", "0.5", "--quiet") == 0
    from jsuff import explain
    from jsuff.audio import load_audio
    from jsuff.models import load_model

    model = load_model(toy / "model")
    x = model.prepare(load_audio(toy / "clip.wav", SR)[0])
    want = explain(model, x, config=SearchConfig(iters=12, tree_depth=3, min_box_size=8, round_iters=1, stop_cells=50,
                                                 stop_overlap=0.5), key=0, quiet=True)
    got = json.loads((tmp_path / "stop" / "summary.json").read_text())
    assert got["search_iterations"] == want.search_iterations == 2
    np.testing.assert_array_equal(np.load(tmp_path / "stop" / "arrays.npz")["mask"], want.mask)
