"""The ReX choices jsuff offers as options: multiplicative maps and ReX's cut rule, each against
the one-candidate-per-call loop and hand-computed values (docs/statistics.md lists the deviations)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsuff import search
from jsuff.search import SearchConfig, combine_maps, responsibility_loop, responsibility_maps
from tests.helpers.toys import CFG, GRID_STFT, KEY, LOUDEST, REGION, band_mlp, loudest_clip, region_clip, region_model

MULT = SearchConfig(iters=CFG.iters, map_combination="multiplicative")
REX_CUTS = SearchConfig(iters=CFG.iters, cut_rule="rex")


def _words(seed, n):
    return np.random.default_rng(seed).integers(0, 2**32, size=(n, 3), dtype=np.uint64).astype(np.uint32)


def test_combine_maps_by_hand():
    # one clip, 3 iterations, 3 cells, 2 classes; class 1 never gets credit
    credits = np.zeros((1, 3, 3, 2))
    credits[0, :, :, 0] = [[1.0, 0.0, 0.5], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    add = combine_maps(credits, "additive")
    np.testing.assert_allclose(add[0, :, 0], [3.0, 1.0, 0.5])
    mult = combine_maps(credits, "multiplicative")
    prod = np.array([2 * 3 * 1, 1 * 1 * 2, 1.5 * 1 * 1])  # products of 1 + credit
    np.testing.assert_allclose(mult[0, :, 0], prod / prod.max())
    assert not mult[0, :, 1].any()  # no credit at all: a zero map, as ReX keeps no map
    # the log-space product survives many large factors
    many = np.full((1, 400, 2, 1), 40.0)
    many[0, :, 1] = 39.0
    np.testing.assert_allclose(combine_maps(many, "multiplicative")[0, :, 0], [1.0, (40 / 41) ** 400])
    with pytest.raises(ValueError, match="map combination"):
        combine_maps(credits, "max")


@pytest.mark.parametrize("cfg", [MULT, REX_CUTS, SearchConfig(iters=4, map_combination="multiplicative",
                                                              cut_rule="rex")])
def test_options_match_the_loop_on_1d(cfg):
    got = responsibility_maps(band_mlp, LOUDEST, loudest_clip(), config=cfg, key=KEY)
    ref = responsibility_loop(band_mlp, LOUDEST, loudest_clip(), config=cfg, key=KEY)
    np.testing.assert_allclose(got.maps, ref.maps, atol=1e-5)
    assert got.queries.tolist() == ref.queries.tolist() and got.depth.tolist() == ref.depth.tolist()
    target = got.maps[0, 2]
    assert 128 <= int(np.argmax(target)) < 192  # the planted band still wins
    if cfg.map_combination == "multiplicative":
        credited = got.maps[0].reshape(4, -1).any(1)
        np.testing.assert_allclose(got.maps[0][credited].max(-1), 1.0)
        assert (got.maps >= 0).all() and (got.maps <= 1 + 1e-6).all()


@pytest.mark.parametrize("cfg", [MULT, REX_CUTS])
def test_options_match_the_loop_on_2d(cfg):
    params = jnp.asarray(REGION)
    kw = dict(domain=GRID_STFT, config=cfg, key=KEY)
    got = responsibility_maps(region_model, params, region_clip(), target_only=True, **kw)
    ref = responsibility_loop(region_model, params, region_clip(), **kw)
    np.testing.assert_allclose(got.maps[:, 0], ref.maps[:, 1], atol=1e-5)
    assert got.queries.tolist() == ref.queries.tolist()


def test_rex_cut_rule_in_1d_allows_an_empty_first_child():
    # width 10: 3 distinct offsets of 0..9, C(10, 3) = 120 triples; offset 0 (an empty first
    # child) has probability 3/10
    box = jnp.array([0, 1, 20, 30], jnp.int32)
    kids = np.asarray(jax.jit(jax.vmap(lambda u: search._split(u, box, False, True)))(jnp.asarray(_words(2, 12000))))
    width = kids[:, :, 3] - kids[:, :, 2]
    assert (width >= 0).all() and (width[:, 1:] > 0).all(), "only the first child can be empty"
    assert (kids[:, 0, 2] == 20).all() and (kids[:, 3, 3] == 30).all()
    assert (kids[:, 1:, 2] == kids[:, :-1, 3]).all(), "children tile the box"
    assert abs((width[:, 0] == 0).mean() - 0.3) < 0.02
    counts = {t: 0 for t in itertools.combinations(range(20, 30), 3)}
    for k in kids:
        counts[(int(k[1, 2]), int(k[2, 2]), int(k[3, 2]))] += 1
    assert len(counts) == 120 and min(counts.values()) > 60 and max(counts.values()) < 145
    interior = np.asarray(jax.vmap(lambda u: search._split(u, box, False))(jnp.asarray(_words(2, 2000))))
    assert ((interior[:, :, 3] - interior[:, :, 2]) > 0).all()


def test_rex_cut_rule_in_2d_draws_a_flat_position():
    box = jnp.array([3, 5, 4, 9], jnp.int32)  # 2 rows x 5 columns: positions 1..9 of the 10
    kids = np.asarray(jax.vmap(lambda u: search._split(u, box, True, True))(jnp.asarray(_words(3, 9000))))
    area = (kids[..., 1] - kids[..., 0]) * (kids[..., 3] - kids[..., 2])
    assert (area >= 0).all() and (area.sum(1) == 10).all()
    pos = (kids[:, 0, 1] - 3) * 5 + (kids[:, 0, 3] - 4)
    assert set(pos.tolist()) == set(range(1, 10))
    assert np.abs(np.bincount(pos, minlength=10)[1:] / 9000 - 1 / 9).max() < 0.015
    assert (area[:, 0] == 0).mean() > 0.4  # row 0 or column 0: the top-left quadrant is empty


def test_config_checks():
    with pytest.raises(ValueError, match="map_combination"):
        SearchConfig(map_combination="sum")
    with pytest.raises(ValueError, match="cut_rule"):
        SearchConfig(cut_rule="ReX")
    assert SearchConfig().map_combination == "additive" and SearchConfig().cut_rule == "interior"
