"""Extraction from planted responsibility maps: insertion, contrastive, complete, certificate,
pruning, the trivial case, independence of the prefixes evaluated per call, the chunk size, and
clips batched together."""

import dataclasses

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from jsuff import extract as extract_module
from jsuff.domains import RFFT
from jsuff.extract import (
    ExtractConfig,
    certify,
    classify,
    complete_prefix,
    contrastive_prefix,
    extract,
    for_clips,
    prune,
    rank,
    sufficient_prefix,
)
from tests.helpers.toys import BINS, BOTH, LOUDEST, NARROW, band_mlp, both_clip, noise, tone

ONE = ExtractConfig(chunk_size=1)

# Magnitudes (rfft of a unit cosine at an integer bin is 256): band 2 gets 1 at bins 150 and 170
# and 0.8 at bin 180, band 1 gets 1 at bin 90. No noise, so the labels are exact.
UNIT = 1.0 / 256.0


def graded_clip() -> np.ndarray:
    return (tone(150, UNIT) + tone(170, UNIT) + tone(90, UNIT) + tone(180, 0.8 * UNIT)).astype(np.float32)


def planted(*cells: int) -> np.ndarray:
    """A map ranking ``cells`` first, in that order (the rest tie at 0, ranked by index)."""
    r = np.zeros(BINS, np.float32)
    for i, c in enumerate(cells):
        r[c] = len(cells) - i
    return r


def _with(problem, **changes):
    """The same clips with other extraction settings (what the model said about them stays)."""
    return dataclasses.replace(problem, config=dataclasses.replace(problem.config, **changes))


def _extract_one(problem, responsibility, **changes):
    (ex,) = extract(_with(problem, **changes), responsibility[None])
    return ex


@pytest.fixture(scope="module")
def graded_and_queries():
    return for_clips(band_mlp, LOUDEST, RFFT(), graded_clip(), ONE)


@pytest.fixture(scope="module")
def graded(graded_and_queries):
    return graded_and_queries[0]


@pytest.fixture(scope="module")
def both():
    return for_clips(band_mlp, BOTH, RFFT(), both_clip(), ONE)[0]


def test_rank_breaks_ties_by_index_and_cuts_chunks():
    r = rank(np.array([0.0, 2.0, 1.0, 2.0, 0.0]), 2)
    assert r.order.tolist() == [1, 3, 2, 0, 4]
    assert r.chunk_of_cell.tolist() == [1, 0, 1, 0, 2]
    assert r.num_chunks == 3
    two_d = rank(np.array([[0.0, 5.0], [5.0, 1.0]]), 1)
    assert two_d.order.tolist() == [1, 2, 3, 0]  # row-major flat indices
    with pytest.raises(ValueError, match="non-finite"):
        rank(np.array([0.0, np.nan]), 1)


def test_problem_reports_clip_empty_and_full(graded, graded_and_queries):
    assert graded.targets.tolist() == [2] and graded.empty_label.tolist() == [0]
    assert not graded.empty_is_target.any()
    assert graded.full_label.tolist() == [2]
    assert graded.full_confidence[0] == pytest.approx(graded.confidence[0], abs=1e-5)
    assert graded_and_queries[1].tolist() == [3]  # the clip, the empty and the full signal


def test_sufficient_contrastive_and_complete_differ_as_planted(graded):
    ranking = rank(planted(150, 170, 90, 180), 1)
    # {150} already makes band 2 the loudest: the growing scan asks prefix 1 alone; a scan whose
    # first block is the widest asks prefixes 1..256 in one call
    assert sufficient_prefix(graded, ranking) == (1, 1)
    assert sufficient_prefix(_with(graded, prefixes_first_call=256), ranking) == (1, 256)
    # removing {150} leaves 1.8 in band 2 against 1 in band 1; removing {150, 170} flips it
    assert contrastive_prefix(graded, ranking)[0] == 2
    # {150, 170} (conf 0.71) and {+90} (0.61) stay below the clip's 0.78; {+180} reaches it
    k, _ = complete_prefix(graded, ranking, 2)
    assert k is not None and k >= 4
    (labels, conf), queries = classify(graded, ranking, np.arange(ranking.num_chunks)[None] < k)
    assert labels[0] == 2 and conf[0] >= graded.full_confidence[0] and queries == 1
    for mode, size in (("sufficient", 1), ("contrastive", 2)):
        ex = _extract_one(graded, planted(150, 170, 90, 180), mode=mode)
        assert ex.found and ex.verified and int(ex.mask.sum()) == size
        assert ex.necessary == (mode == "contrastive")
    ex = _extract_one(graded, planted(150, 170, 90, 180), mode="complete")
    assert ex.found and ex.verified and ex.mask[[150, 170, 90, 180]].all()
    assert ex.confidence >= graded.full_confidence[0]


def test_tau_asks_for_confidence_as_well(graded):
    strict = _with(graded, tau=0.9)
    ranking = rank(planted(150, 170, 90, 180), 1)
    # {150} is top-1 with confidence 0.47 < 0.9 x 0.78; {150, 170} has 0.71 >= 0.70
    assert sufficient_prefix(graded, ranking)[0] == 1
    assert sufficient_prefix(strict, ranking)[0] == 2


@pytest.mark.parametrize("per_call", [1, 2, 7, 256])
def test_scans_do_not_depend_on_prefixes_per_call(both, per_call):
    ranking = rank(planted(5, 40, 208), 1)
    blocks = _with(both, prefixes_per_call=per_call)
    assert sufficient_prefix(blocks, ranking)[0] == 3
    assert contrastive_prefix(blocks, ranking)[0] == 3
    ex = _extract_one(both, planted(5, 40, 208), prefixes_per_call=per_call)
    assert np.flatnonzero(ex.mask).tolist() == [5, 40, 208]


# thirteen chunks of one bin before the scan reaches a sufficient prefix (the 12th holds 40, the
# 13th 208): several blocks of a growing scan
DEEP = planted(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 40, 208)


def _asked(k: int, first: int, widest: int) -> int:
    """Prefixes a scan asks before it stops at prefix k: whole blocks of first, 2 first, ...
    (at most widest), up to the block that holds k (written apart from the module's loop)."""
    blocks = [min(first * 2**j, widest) for j in range(64)]
    ends = np.cumsum(blocks)  # block j covers prefixes ends[j-1]+1 .. ends[j]
    return int(ends[np.searchsorted(ends, k)])


@pytest.mark.parametrize(
    "per_call, first", [(1, 1), (2, 1), (7, 1), (256, 1), (7, 3), (5, 16), (256, 256), (256, None)]
)
def test_scans_do_not_depend_on_the_schedule(both, per_call, first):
    blocks = _with(both, prefixes_per_call=per_call, prefixes_first_call=first)
    ranking = rank(DEEP, 1)
    k, queries = sufficient_prefix(blocks, ranking)
    start = min(first or 1, per_call)  # None: 1 on this CPU
    assert k == 13 and queries == _asked(13, start, per_call)
    if start == 1:
        assert queries < 2 * 13  # a growing scan asks fewer than twice the prefixes it needs
    assert contrastive_prefix(blocks, ranking)[0] == 13
    assert complete_prefix(blocks, ranking, 13)[0] == complete_prefix(both, ranking, 13)[0]
    for mode in ("sufficient", "contrastive"):
        ex = _extract_one(both, DEEP, prefixes_per_call=per_call, prefixes_first_call=first, prune=True, mode=mode)
        assert np.flatnonzero(ex.mask).tolist() == [40, 208] and ex.minimal and ex.verified
    # pruning's search for the longest run of drops follows the schedule too
    (pruned, cert), _ = prune(blocks, ranking, np.arange(ranking.num_chunks) < 13)
    assert cert.minimal and ranking.order[np.flatnonzero(pruned)].tolist() == [40, 208]


def test_the_certificate_does_not_ask_what_the_scan_answered(both):
    # prefix 3 = {5, 40, 208} is the first sufficient one; its certificate removes chunks 0 and 1
    # (2 rows): without chunk 2 it is prefix 2, which the scan found not sufficient
    ex = _extract_one(both, planted(5, 40, 208))
    assert ex.removable == (0,) and ex.minimal is False
    assert ex.queries == _asked(3, 1, 256) + 2 + 2  # scan, certificate, final check
    # a one-chunk set: without it, the empty signal (known); the scan's one prefix and the check
    one = _extract_one(both, planted(5, 40, 208), chunk_size=3)
    assert one.minimal and one.queries == 1 + 0 + 2


@pytest.mark.parametrize("total", [0, 1, 2, 3, 5, 63, 64, 65, 127, 255, 256, 300, 513, 1000])
@pytest.mark.parametrize("per_call, batch, unit", [(256, 64, 1), (64, 64, 1), (96, 48, 1), (256, 64, 4), (12, 12, 4)])
def test_call_sizes_pad_nothing_but_the_device_rounding(total, per_call, batch, unit):
    sizes = extract_module._call_sizes(total, per_call, batch, unit)
    assert 0 <= sum(sizes) - total < unit  # only the rounding to the device count is padding
    assert all(s % unit == 0 and s <= per_call for s in sizes)
    assert sum(sizes[:-1]) < total or not sizes  # the padding, if any, is in the last call
    allowed = {per_call, batch} | {unit * 2**j for j in range(12) if unit * 2**j < batch}
    assert set(sizes) <= allowed


@pytest.fixture
def call_rows(monkeypatch):
    """The rows of every model call the extraction makes, as it makes them."""
    rows = []
    counted = extract_module._classify_sets

    def counting(*args, **kwargs):
        rows.append(args[4].shape[0])
        return counted(*args, **kwargs)

    monkeypatch.setattr(extract_module, "_classify_sets", counting)
    return rows


@pytest.mark.parametrize("devices", [1, 4])
def test_queries_are_the_rows_the_model_evaluates(call_rows, devices):
    if len(jax.devices()) < devices:
        pytest.skip("needs 4 devices (tests/conftest.py forces 4 host CPU devices)")
    rows = call_rows
    mesh = Mesh(np.array(jax.devices()[:devices]), ("cand",)) if devices > 1 else None
    clips = np.stack([graded_clip(), tone(90, UNIT) + tone(20, 0.5 * UNIT), graded_clip()])
    maps = np.stack([planted(150, 170, 90, 180), planted(90, 20), DEEP])
    problem, queries = for_clips(band_mlp, LOUDEST, RFFT(), clips, ExtractConfig(chunk_size=1, prune=True), mesh=mesh)
    assert sum(rows) == int(queries.sum()) - 3  # the clips themselves are classified by prepare()
    rows.clear()
    found = extract(problem, maps)
    assert sum(rows) == sum(e.queries for e in found) and all(r % devices == 0 for r in rows)
    assert [e.verified and e.minimal for e in found] == [True, True, True]


def test_certificate_finds_a_removable_chunk_and_pruning_removes_it(both):
    ranking = rank(planted(5, 40, 208), 1)
    include = np.arange(ranking.num_chunks) < 3  # {5, 40, 208}: bin 5 is not needed
    cert, queries = certify(both, ranking, include)
    assert not cert.minimal and cert.removable == (0,) and queries == 3  # one removal per chunk
    (pruned, cert), _ = prune(both, ranking, include)
    assert cert.minimal and np.flatnonzero(pruned).tolist() == [1, 2]
    ex = _extract_one(both, planted(5, 40, 208), prune=True)
    assert ex.minimal and np.flatnonzero(ex.mask).tolist() == [40, 208] and ex.verified
    ex = _extract_one(both, planted(5, 40, 208))
    assert ex.minimal is False and ex.removable == (0,)
    # the two bands are each necessary: removing either chunk of {40, 208} breaks sufficiency
    assert certify(both, ranking, np.isin(np.arange(ranking.num_chunks), [1, 2]))[0].minimal


def test_pruning_can_remove_several_chunks_in_one_round(both):
    ranking = rank(planted(3, 4, 5, 40, 6, 208, 7), 1)
    (pruned, cert), _ = prune(both, ranking, np.arange(ranking.num_chunks) < 7)
    assert cert.minimal
    assert ranking.order[np.flatnonzero(pruned)].tolist() == [40, 208]


def test_trivial_case_when_the_empty_signal_has_the_label():
    problem, queries = for_clips(band_mlp, NARROW, RFFT(), noise(5), ExtractConfig(chunk_size=10))
    assert problem.targets.tolist() == [0] and problem.empty_label.tolist() == [0]
    assert problem.empty_is_target.tolist() == [True]
    (ex,) = extract(problem, np.zeros((1, BINS), np.float32))
    assert ex.empty_is_target and ex.verified and ex.minimal and not ex.mask.any()
    assert queries.tolist() == [3] and ex.queries == 0  # nothing was scanned


def test_not_found_when_no_prefix_has_the_target():
    unlikely, _ = for_clips(band_mlp, LOUDEST, RFFT(), graded_clip(), ExtractConfig(chunk_size=16), targets=3)
    (ex,) = extract(unlikely, planted(150, 170)[None])
    assert not ex.found and not ex.verified and ex.mask.all() and ex.minimal is None


def test_classify_jit_equals_eager(both):
    ranking = rank(planted(5, 40, 208), 1)
    include = np.arange(ranking.num_chunks)[None] < np.array([[1], [3], [5]])
    (labels, conf), _ = classify(both, ranking, include)
    with jax.disable_jit():
        (labels_e, conf_e), _ = classify(both, ranking, include)
    np.testing.assert_array_equal(labels, labels_e)
    np.testing.assert_allclose(conf, conf_e, rtol=1e-6)
    assert labels.tolist() == [0, 1, 1]


def test_config_errors():
    with pytest.raises(ValueError, match="mode"):
        ExtractConfig(mode="best")
    with pytest.raises(ValueError, match="tau"):
        ExtractConfig(tau=2.0)
    assert ExtractConfig().resolved_chunk_size(12) == 12 and ExtractConfig(chunk_size=3).resolved_chunk_size() == 3


def test_chunk_size_is_the_granularity_extract_uses(both):
    # chunks of 3: the first chunk is the planted {5, 40, 208}; of 2: {5, 40} then {208, 0}
    three = _extract_one(both, planted(5, 40, 208), chunk_size=3)
    assert three.include.shape == (-(-BINS // 3),) and np.flatnonzero(three.mask).tolist() == [5, 40, 208]
    assert three.minimal and three.removable == ()
    two = _extract_one(both, planted(5, 40, 208), chunk_size=2)
    assert two.include.shape == (-(-BINS // 2),) and np.flatnonzero(two.mask).tolist() == [0, 5, 40, 208]
    assert two.minimal and two.removable == ()  # {5, 40} holds tone 40, {208, 0} tone 208
    # None is the search's default box size
    assert for_clips(band_mlp, BOTH, RFFT(), both_clip())[0].config.chunk_size == 10


def test_clips_batched_together_equal_one_at_a_time(call_rows):
    calls = call_rows
    # band 2 wins; band 1 wins; band 0 wins, as on the empty signal (the trivial case)
    clips = np.stack([graded_clip(), tone(90, UNIT) + tone(20, 0.5 * UNIT), tone(20, UNIT)])
    maps = np.stack([planted(150, 170, 90, 180), planted(90, 20), np.zeros(BINS, np.float32)])
    config = ExtractConfig(prune=True)

    def run(x, m):
        calls.clear()
        problem, queries = for_clips(band_mlp, LOUDEST, RFFT(), x, config)
        return problem, queries, extract(problem, m), len(calls)

    problem, queries, together, calls_together = run(clips, maps)
    assert problem.targets.tolist() == [2, 1, 0] and queries.tolist() == [3, 3, 3]
    assert problem.empty_is_target.tolist() == [False, False, True]
    calls_alone = 0
    for i in range(3):
        _, q, (alone,), c = run(clips[i], maps[i : i + 1])
        calls_alone += c
        assert q.tolist() == [3]
        for a, b in zip(together[i], alone):
            np.testing.assert_array_equal(a, b)
    assert [e.found and e.verified for e in together] == [True, True, True]
    assert together[2].empty_is_target and together[2].queries == 0
    # the empty and full signals, certificates and final checks of the clips share calls
    assert calls_together < calls_alone
