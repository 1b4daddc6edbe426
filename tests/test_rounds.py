"""The search in rounds: without stopping, exactly the maps of one round; with stopping, the rule of
``SearchConfig.stop_overlap``, checked against an independent reference and the one-candidate loop,
on the host and under the caller's jit/vmap."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsuff import search
from jsuff.domains import RFFT
from jsuff.evaluate import clip_keys, prepare
from jsuff.search import SearchConfig, responsibility_loop, responsibility_maps
from tests.helpers.toys import BOTH, KEY, LOUDEST, band_mlp, both_clip, loudest_clip, noise, tone

ONE_ROUND = SearchConfig(iters=7, round_iters=None, stop_overlap=None)
# stops early on the toys: the loudest band's top cells settle within a few iterations
STOPPING = SearchConfig(iters=12, round_iters=2, stop_cells=8, stop_overlap=0.75)


def _clips() -> np.ndarray:
    return np.stack([loudest_clip(), tone(90) + 0.3 * tone(20) + noise(6), tone(150) + noise(8)])


@functools.cache
def _one_round(combination: str, target_only: bool) -> search.SearchResult:
    """The search of all iterations in one round (what every round size must give)."""
    one = dataclasses.replace(ONE_ROUND, map_combination=combination)
    return responsibility_maps(band_mlp, LOUDEST, _clips(), config=one, key=jax.random.split(KEY, 3),
                               target_only=target_only)


def _same(a: search.SearchResult, b: search.SearchResult) -> None:
    np.testing.assert_array_equal(a.maps, b.maps)
    assert a.queries.tolist() == b.queries.tolist() and a.depth.tolist() == b.depth.tolist()
    assert a.iterations.tolist() == b.iterations.tolist()


@pytest.mark.parametrize("combination", ["additive", "multiplicative"])
@pytest.mark.parametrize("round_iters", [1, 2, 3, 50])
def test_rounds_without_stopping_are_one_round(combination, round_iters):
    one = dataclasses.replace(ONE_ROUND, map_combination=combination)
    rounds = dataclasses.replace(one, round_iters=round_iters)
    keys = jax.random.split(KEY, 3)
    prepared = prepare(band_mlp, LOUDEST, _clips(), domain=RFFT(), min_box_size=one.min_box_size)
    draws = search.iteration_draws(clip_keys(keys, 3), iters=one.iters, tree_depth=one.tree_depth)
    for target_only in (False, True):
        want = _one_round(combination, target_only)
        got = responsibility_maps(band_mlp, LOUDEST, _clips(), config=rounds, key=keys, target_only=target_only)
        _same(got, want)
        # the round loop itself (walk_rounds walks rounds even where nothing can stop)
        w = search.walk_rounds(band_mlp, LOUDEST, prepared, draws, config=rounds, target_only=target_only)
        _same(search.maps_of(w, prepared, (257,), combination), want)
        assert got.iterations.tolist() == [7, 7, 7]
    # inactive clips walk nothing in any round
    w = search.walk_rounds(band_mlp, LOUDEST, prepared, draws, config=rounds, active=jnp.array([True, False, True]))
    off = search.maps_of(w, prepared, (257,), combination)
    assert off.iterations.tolist() == [7, 0, 7] and off.queries[1] == 0 and not off.maps[1].any()


def _per_iteration(clips: np.ndarray, config: SearchConfig, keys: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Each iteration's integrated target credits ``[N, I, G]`` (units of 1/6, the walk's exact
    integer credit) and queries ``[N, I]``, every iteration walked on its own."""
    prepared = prepare(band_mlp, LOUDEST, clips, domain=RFFT(), min_box_size=config.min_box_size)
    draws = search.iteration_draws(clip_keys(keys, clips.shape[0]), iters=config.iters, tree_depth=config.tree_depth)
    credit, queries = [], []
    for i in range(config.iters):
        w = search.walk(band_mlp, LOUDEST, prepared, draws[:, i : i + 1], config=config, target_only=True)
        credit.append(np.asarray(w.credits, np.int64)[:, 0, 0, :, 0])
        queries.append(np.asarray(w.queries))
    return np.stack(credit, 1), np.stack(queries, 1)


def _reference_stop(credit: np.ndarray, config: SearchConfig) -> int:
    """Iterations one clip walks under the rule, from its per-iteration credits (written apart)."""
    size, top = config.round_iters, {}
    for r in range(1, -(-config.iters // size)):  # every round but the last
        total = credit[: r * size].sum(0)
        ranked = sorted(range(total.size), key=lambda c: (-total[c], c))  # ties: lower cell first
        top[r] = set(ranked[: config.stop_cells])
        if r >= 2 and total.max() > 0 and len(top[r] & top[r // 2]) >= config.stop_overlap * len(top[r]):
            return r * size
    return config.iters


@pytest.mark.parametrize("config", [STOPPING, dataclasses.replace(STOPPING, iters=11, round_iters=3)])
def test_stopping_follows_the_rule_clip_by_clip(config):
    keys = jax.random.split(jax.random.key(5), 3)
    credit, queries = _per_iteration(_clips(), config, keys)
    stops = [_reference_stop(credit[i], config) for i in range(3)]
    assert min(stops) < config.iters, "the toys should let the rule stop early"
    got = responsibility_maps(band_mlp, LOUDEST, _clips(), config=config, key=keys, target_only=True)
    assert got.iterations.tolist() == stops
    for i, t in enumerate(stops):
        np.testing.assert_array_equal(got.maps[i, 0], (credit[i, :t].sum(0) / 6).astype(np.float32))
        assert got.queries[i] == queries[i, :t].sum()
    # batched clips stop where each would alone
    for i in range(3):
        alone = responsibility_maps(band_mlp, LOUDEST, _clips()[i], config=config, key=keys[i], target_only=True)
        np.testing.assert_array_equal(alone.maps[0], got.maps[i])
        assert alone.iterations.tolist() == [stops[i]]
    # and inside the caller's jit(vmap) over clips and keys: the same stops, queries and maps
    traced = jax.jit(jax.vmap(
        lambda x, k: responsibility_maps(band_mlp, LOUDEST, x, config=config, key=k, target_only=True)
    ))(jnp.asarray(_clips()), keys)
    assert np.asarray(traced.iterations)[:, 0].tolist() == stops
    assert np.asarray(traced.queries)[:, 0].tolist() == got.queries.tolist()
    np.testing.assert_allclose(np.asarray(traced.maps)[:, 0], got.maps, rtol=1e-6)


@pytest.mark.parametrize("combination", ["additive", "multiplicative"])
def test_stopping_matches_the_one_candidate_loop(combination):
    config = dataclasses.replace(STOPPING, map_combination=combination)
    got = responsibility_maps(band_mlp, LOUDEST, loudest_clip(), config=config, key=KEY)
    ref = responsibility_loop(band_mlp, LOUDEST, loudest_clip(), config=config, key=KEY)
    assert got.iterations.tolist() == ref.iterations.tolist() and got.iterations[0] < config.iters
    np.testing.assert_allclose(got.maps, ref.maps, atol=1e-5)
    assert got.queries.tolist() == ref.queries.tolist()


def test_a_map_without_credit_never_stops():
    # classes 2 and 3 of BOTH never win: nothing passes, no credit, every iteration is walked
    r = responsibility_maps(band_mlp, BOTH, both_clip(), config=STOPPING, key=KEY, targets=[2], target_only=True)
    assert r.iterations.tolist() == [STOPPING.iters] and not r.maps.any()
    assert r.queries[0] == 14 * STOPPING.iters  # the root's 14 mutants, every iteration


def test_round_config_errors():
    with pytest.raises(ValueError, match="round_iters"):
        SearchConfig(round_iters=0)
    with pytest.raises(ValueError, match="stop_overlap"):
        SearchConfig(stop_overlap=0.0)
    with pytest.raises(ValueError, match="stop_overlap"):
        SearchConfig(stop_overlap=1.5)
    with pytest.raises(ValueError, match="stop_cells"):
        SearchConfig(stop_cells=0)
