"""Extraction from planted responsibility maps: insertion, contrastive, complete, certificate,
pruning, the trivial case, and independence of the prefixes evaluated per call."""

import jax
import numpy as np
import pytest

from jsuff.domains import RFFT
from jsuff.extract import (
    ExtractConfig,
    Oracle,
    certify,
    complete_prefix,
    contrastive_prefix,
    extract,
    prune,
    rank,
    sufficient_prefix,
)
from tests.helpers.toys import BINS, BOTH, LOUDEST, NARROW, band_mlp, both_clip, noise, tone

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


@pytest.fixture(scope="module")
def graded():
    return Oracle.for_clip(band_mlp, LOUDEST, RFFT(), graded_clip(), chunk_size=1)


@pytest.fixture(scope="module")
def both():
    return Oracle.for_clip(band_mlp, BOTH, RFFT(), both_clip(), chunk_size=1)


def test_rank_breaks_ties_by_index_and_cuts_chunks():
    r = rank(np.array([0.0, 2.0, 1.0, 2.0, 0.0]), 2)
    assert r.order.tolist() == [1, 3, 2, 0, 4]
    assert r.chunk_of_cell.tolist() == [1, 0, 1, 0, 2]
    assert r.num_chunks == 3
    two_d = rank(np.array([[0.0, 5.0], [5.0, 1.0]]), 1)
    assert two_d.order.tolist() == [1, 2, 3, 0]  # row-major flat indices
    with pytest.raises(ValueError, match="non-finite"):
        rank(np.array([0.0, np.nan]), 1)


def test_oracle_reports_clip_empty_and_full(graded):
    assert graded.target == 2 and graded.empty_label == 0 and not graded.empty_is_target
    assert graded.full_label == 2 and graded.full_confidence == pytest.approx(graded.confidence, abs=1e-5)
    assert graded.queries == 3  # the clip, the empty and the full signal


def test_sufficient_contrastive_and_complete_differ_as_planted(graded):
    ranking = rank(planted(150, 170, 90, 180), 1)
    # {150} already makes band 2 the loudest
    assert sufficient_prefix(graded, ranking) == 1
    # removing {150} leaves 1.8 in band 2 against 1 in band 1; removing {150, 170} flips it
    assert contrastive_prefix(graded, ranking) == 2
    # {150, 170} (conf 0.71) and {+90} (0.61) stay below the clip's 0.78; {+180} reaches it
    k = complete_prefix(graded, ranking, 2)
    assert k is not None and k >= 4
    labels, conf = graded.classify(ranking, np.arange(ranking.num_chunks)[None] < k)
    assert labels[0] == 2 and conf[0] >= graded.full_confidence
    for mode, size in (("sufficient", 1), ("contrastive", 2)):
        ex = extract(graded, planted(150, 170, 90, 180), ExtractConfig(mode=mode))
        assert ex.found and ex.verified and int(ex.mask.sum()) == size
        assert ex.necessary == (mode == "contrastive")
    ex = extract(graded, planted(150, 170, 90, 180), ExtractConfig(mode="complete"))
    assert ex.found and ex.verified and ex.mask[[150, 170, 90, 180]].all()
    assert ex.confidence >= graded.full_confidence


def test_tau_asks_for_confidence_as_well(graded):
    strict = Oracle(band_mlp, LOUDEST, RFFT(), graded.coeffs, 2, graded.confidence, tau=0.9, chunk_size=1)
    ranking = rank(planted(150, 170, 90, 180), 1)
    # {150} is top-1 with confidence 0.47 < 0.9 x 0.78; {150, 170} has 0.71 >= 0.70
    assert sufficient_prefix(graded, ranking) == 1
    assert sufficient_prefix(strict, ranking) == 2


@pytest.mark.parametrize("per_call", [1, 2, 7, 256])
def test_scans_do_not_depend_on_prefixes_per_call(both, per_call):
    ranking = rank(planted(5, 40, 208), 1)
    assert sufficient_prefix(both, ranking, per_call) == 3
    assert contrastive_prefix(both, ranking, per_call) == 3
    ex = extract(both, planted(5, 40, 208), ExtractConfig(prefixes_per_call=per_call))
    assert np.flatnonzero(ex.mask).tolist() == [5, 40, 208]


def test_certificate_finds_a_removable_chunk_and_pruning_removes_it(both):
    ranking = rank(planted(5, 40, 208), 1)
    include = np.arange(ranking.num_chunks) < 3  # {5, 40, 208}: bin 5 is not needed
    cert = certify(both, ranking, include)
    assert not cert.minimal and cert.removable == (0,)
    pruned, cert = prune(both, ranking, include)
    assert cert.minimal and np.flatnonzero(pruned).tolist() == [1, 2]
    ex = extract(both, planted(5, 40, 208), ExtractConfig(prune=True))
    assert ex.minimal and np.flatnonzero(ex.mask).tolist() == [40, 208] and ex.verified
    ex = extract(both, planted(5, 40, 208))
    assert ex.minimal is False and ex.removable == (0,)
    # the two bands are each necessary: removing either chunk of {40, 208} breaks sufficiency
    assert certify(both, ranking, np.isin(np.arange(ranking.num_chunks), [1, 2])).minimal


def test_pruning_can_remove_several_chunks_in_one_round(both):
    ranking = rank(planted(3, 4, 5, 40, 6, 208, 7), 1)
    pruned, cert = prune(both, ranking, np.arange(ranking.num_chunks) < 7)
    assert cert.minimal
    assert ranking.order[np.flatnonzero(pruned)].tolist() == [40, 208]


def test_trivial_case_when_the_empty_signal_has_the_label():
    oracle = Oracle.for_clip(band_mlp, NARROW, RFFT(), noise(5), chunk_size=10)
    assert oracle.target == 0 and oracle.empty_label == 0 and oracle.empty_is_target
    ex = extract(oracle, np.zeros(BINS, np.float32))
    assert ex.empty_is_target and ex.verified and ex.minimal and not ex.mask.any()
    assert oracle.queries == 3  # nothing was scanned


def test_not_found_when_no_prefix_has_the_target(graded):
    oracle = Oracle(band_mlp, LOUDEST, RFFT(), graded.coeffs, 3, 0.1, chunk_size=16)
    ex = extract(oracle, planted(150, 170))
    assert not ex.found and not ex.verified and ex.mask.all() and ex.minimal is None


def test_classify_jit_equals_eager(both):
    ranking = rank(planted(5, 40, 208), 1)
    include = np.arange(ranking.num_chunks)[None] < np.array([[1], [3], [5]])
    labels, conf = both.classify(ranking, include)
    with jax.disable_jit():
        labels_e, conf_e = both.classify(ranking, include)
    np.testing.assert_array_equal(labels, labels_e)
    np.testing.assert_allclose(conf, conf_e, rtol=1e-6)
    assert labels.tolist() == [0, 1, 1]


def test_config_errors():
    with pytest.raises(ValueError, match="mode"):
        ExtractConfig(mode="best")
    with pytest.raises(ValueError, match="tau"):
        ExtractConfig(tau=2.0)
    assert ExtractConfig().resolved_chunk_size(12) == 12 and ExtractConfig(chunk_size=3).resolved_chunk_size() == 3
