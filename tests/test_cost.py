"""Long runs (issue 16): the cost said before a run (grid, queries, a calibrated time), a warning for a
grid far larger than usual, and explain's progress lines (logging or stderr, quiet)."""

import importlib
import logging
import math
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import jsuff
from jsuff import STFT, Model, SearchConfig, Time, estimate_cost, explain, explain_many
from jsuff.cost import LARGE_GRID_CELLS, CostWarning, clip_queries, grid_warning
from jsuff.progress import RunProgress
from tests.helpers.toys import CFG, KEY, LOUDEST, NARROW, T, band_mlp, compilations, loudest_clip, noise

EXPLAIN = importlib.import_module("jsuff.explain")  # the module (jsuff.explain is the function)


def padded_mlp(params, x):
    """band_mlp for clips of any length up to 512 (zero-padded)."""
    return band_mlp(params, jnp.pad(x, ((0, 0), (0, T - x.shape[1]))))


def test_query_counts_follow_the_walk():
    cost = estimate_cost(band_mlp, LOUDEST, loudest_clip(), config=CFG, calibrate=False)
    assert cost.grid_shape == (257,) and cost.cells == 257 and cost.clips == 1 and cost.domain == "rfft"
    # the root box (14 mutants) then up to 3 boxes of 14 per depth, for each of the 6 iterations
    assert cost.max_search_queries == CFG.iters * 14 * (1 + 3 * CFG.tree_depth) == 2604
    # 257 bins / 10 per box: boxes stay splittable for 1 + floor(log4(25.7)) = 3 depths
    assert cost.expected_search_queries == CFG.iters * 14 * (1 + 3 * 2) == 588
    e = explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY)
    assert e.search_queries <= cost.max_search_queries
    # tree_depth 0: every iteration refines the root only, 14 queries, exactly the bound
    shallow = SearchConfig(iters=3, tree_depth=0)
    root = estimate_cost(band_mlp, LOUDEST, loudest_clip(), config=shallow, calibrate=False)
    assert root.max_search_queries == root.expected_search_queries == 42
    assert explain(band_mlp, LOUDEST, loudest_clip(), config=shallow, key=KEY).search_queries == 42
    # clips add up; a 2-D grid counts its cells
    two = estimate_cost(band_mlp, LOUDEST, np.stack([loudest_clip()] * 2), config=CFG, calibrate=False)
    assert two.max_search_queries == 2 * cost.max_search_queries and two.clips == 2
    stft = estimate_cost(band_mlp, LOUDEST, loudest_clip(), domain="stft", calibrate=False)
    assert stft.grid_shape == STFT().grid_shape(T) and stft.cells == math.prod(stft.grid_shape)
    assert clip_queries(stft.cells, SearchConfig(), jsuff.ExtractConfig()) == (
        stft.expected_search_queries, stft.expected_extract_queries)


def test_expected_counts_are_the_counts_of_a_typical_explanation(monkeypatch):
    # the estimate's typical explanation made to be this one: the counts are what it asked
    cost_module = importlib.import_module("jsuff.cost")
    shallow = SearchConfig(iters=12, tree_depth=0)  # every iteration asks the root's 14 mutants
    for extract in (jsuff.ExtractConfig(), jsuff.ExtractConfig(prefixes_first_call=256),
                    jsuff.ExtractConfig(certify=False), jsuff.ExtractConfig(mode="contrastive")):
        e = explain(band_mlp, LOUDEST, loudest_clip(), config=shallow, extract=extract, key=KEY)
        chunks = -(-int(e.mask.sum()) // e.chunk_size)
        assert e.search_iterations < shallow.iters and chunks >= 1, (e.search_iterations, chunks)
        monkeypatch.setattr(cost_module, "TYPICAL_STOP_ITERATIONS", e.search_iterations)
        monkeypatch.setattr(cost_module, "TYPICAL_SET_CHUNKS", chunks)
        cost = estimate_cost(band_mlp, LOUDEST, loudest_clip(), config=shallow, extract=extract, calibrate=False)
        assert cost.expected_search_queries == e.search_queries == 14 * e.search_iterations
        # the clip, its empty and full signals, the scan, the certificate, the final check
        assert cost.expected_extract_queries == e.queries - e.search_queries, extract
    # a search that walks all its iterations is expected to
    walks = SearchConfig(iters=12, tree_depth=0, stop_overlap=None)
    assert estimate_cost(band_mlp, LOUDEST, loudest_clip(), config=walks, calibrate=False).expected_search_queries == 168
    # a stopping search is expected to stop at TYPICAL_STOP_ITERATIONS, in whole rounds, after round 2 at the earliest
    monkeypatch.setattr(cost_module, "TYPICAL_STOP_ITERATIONS", 5)
    for round_iters, walked in ((2, 6), (1, 5), (4, 8), (12, 12)):
        cfg = SearchConfig(iters=12, tree_depth=0, round_iters=round_iters)
        assert clip_queries(257, cfg, jsuff.ExtractConfig(), "cpu")[0] == 14 * walked


def test_the_calibration_times_a_batch_of_candidates_once_compiled():
    cost = estimate_cost(band_mlp, LOUDEST, loudest_clip(), config=CFG)
    assert cost.seconds_per_batch > 0 and cost.compile_seconds >= 0
    assert cost.seconds == pytest.approx(-(-cost.expected_queries // cost.batch) * cost.seconds_per_batch)
    with compilations() as seen:
        again = estimate_cost(band_mlp, LOUDEST, loudest_clip(), config=CFG)
    assert seen == [] and again.seconds > 0
    line = cost.describe()
    assert line.startswith("1 clip of 512 samples, rfft grid 257 cells; search up to 2,604 model queries, about 588 "
                           "for this grid; extraction about ")
    assert "estimated " in line and f"a batch of {cost.batch} candidates takes" in line
    model = Model.from_function(band_mlp, LOUDEST, sample_rate=8000, labels="abcd")
    assert estimate_cost(model, loudest_clip(), config=CFG, calibrate=False).describe().startswith(
        "1 clip of 0.06 s (512 samples)")


def test_a_grid_far_larger_than_usual_is_warned_about():
    msg = grid_warning(STFT(n_fft=9999), 80000)
    assert msg.startswith("STFT(n_fft=9999, hop=128) makes a grid of 5,000 x 626 = 3,130,000 cells for a clip of "
                          "80,000 samples, 19x the 160,882 cells of the default STFT(n_fft=512, hop=128)")
    assert "Use a smaller n_fft or a larger hop" in msg
    assert grid_warning("rfft", 30 * 16000) == "" and grid_warning("stft", 30 * 16000) == ""  # the usual settings
    assert f"more than {LARGE_GRID_CELLS:,} cells" in grid_warning(Time(), 2 * LARGE_GRID_CELLS)
    with pytest.warns(CostWarning, match="makes a grid of 5,000 x 626"):
        cost = estimate_cost(band_mlp, LOUDEST, np.ones(80000, np.float32), domain=STFT(n_fft=9999), calibrate=False)
    assert cost.large_grid == msg
    # explain warns before any work, naming the caller's line (a trivial clip: nothing is searched)
    huge = STFT(n_fft=4096, hop=64)
    with pytest.warns(CostWarning, match="STFT.n_fft=4096, hop=64. makes a grid") as record:
        e = explain(band_mlp, NARROW, noise(2), domain=huge, config=CFG, quiet=True)
    assert e.empty_is_target and record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explain(band_mlp, NARROW, noise(2), domain="stft", config=CFG, quiet=True)  # the default STFT: silent


# ---------------------------------------------------------------------------------------------
# Progress lines


def _messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "jsuff.explain"]


def test_explain_reports_the_cost_then_each_stage(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="jsuff.explain"):
        e = explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY, quiet=False)
    lines = _messages(caplog)
    assert len(lines) == 4, lines
    assert lines[0].startswith("explain: 1 clip of 512 samples, rfft grid 257 cells; search up to 2,604 model queries")
    assert lines[1].startswith("explain: searching 1 clip of 512 samples: 0/1 clips done") and "ETA" in lines[1]
    assert lines[2].startswith(f"explain: search done ({e.search_queries:,} model queries); extracting 1 clip of "
                               "512 samples: 0/1 clips done") and "ETA" in lines[2]
    assert lines[3].startswith(f"explain: done ({e.queries:,} model queries): 1/1 clips") and "ETA" not in lines[3]
    assert capsys.readouterr().err == ""


def test_explain_many_counts_clips_across_lengths(caplog):
    clips = [loudest_clip(), 0.5 * loudest_clip(), loudest_clip()[:500]]
    with caplog.at_level(logging.INFO, logger="jsuff.explain"):
        explain_many(padded_mlp, LOUDEST, clips, config=CFG, key=KEY, quiet=False)
    lines = _messages(caplog)
    assert lines[0].startswith("explain: 3 clips of up to 512 samples")
    done = [line.split(": ")[2].split(" ")[0] for line in lines[1:]]
    assert done == ["0/3", "0/3", "2/3", "2/3", "2/3", "3/3"], lines


def test_quiet_and_short_runs_are_silent_long_ones_talk_on_stderr(caplog, capsys, monkeypatch):
    with caplog.at_level(logging.INFO, logger="jsuff.explain"):
        explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY, quiet=True)
        explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY)  # quiet=None, a toy: short
    assert _messages(caplog) == [] and capsys.readouterr().err == ""
    monkeypatch.setattr(EXPLAIN, "LONG_RUN_SECONDS", 0.0)  # every run looks long
    explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("explain: ") for line in err) and "clips done" in err[1]


def test_eta_scales_the_estimate_by_the_speed_so_far():
    clock = iter([0.0, 0.0, 40.0, 100.0]).__next__
    lines = []
    p = RunProgress("explain", total=60.0, show=True, clock=clock, sink=lines.append)
    p.line("searching", 0, 3, "clips done")
    p.advance(20.0)  # work estimated at 20 s took 40 s: the rest (40 s estimated) should take 80 s
    p.line("search done", 1, 3, "clips done")
    p.advance(40.0)
    p.line("done", 3, 3, "clips")
    assert lines == [
        "explain: searching: 0/3 clips done, ETA 1m00s",
        "explain: search done: 1/3 clips done, 40s elapsed, ETA 1m20s",
        "explain: done: 3/3 clips, 1m40s elapsed",
    ]
    silent = RunProgress("explain", 1.0, show=False, sink=lines.append)
    silent.line("x", 0, 1, "clips")
    silent.say("y")
    assert len(lines) == 3
