"""The batched responsibility search: planted answers, the loop reference, invariances, compiles."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from jsuff import evaluate, search
from jsuff.audio import AudioError
from jsuff.domains import RFFT, Time
from jsuff.search import SearchConfig, responsibility_loop, responsibility_maps
from tests.helpers.toys import (
    CFG,
    GRID_STFT,
    KEY,
    LOUDEST,
    NARROW,
    REGION,
    band_mlp,
    compilations,
    loudest_clip,
    noise,
    region_clip,
    region_model,
    T,
    tone,
    window_clip,
)



def _compiled_stages() -> tuple[int, ...]:
    """JAX's own cache sizes of the search's jitted stages for band_mlp (a retrace adds one)."""
    return (
        search.iteration_draws._cache_size(),
        # the walk, one round of all iterations or in rounds (CFG's default): either's retrace counts
        search._walk.cache_size(band_mlp) + search._walk_rounds.cache_size(band_mlp),
        evaluate.analyze_and_predict.cache_size(band_mlp),
    )


@pytest.fixture(scope="module")
def loudest():
    return responsibility_maps(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY)


def test_planted_loudest_band(loudest):
    r = loudest
    assert r.maps.shape == (1, 4, 257)
    assert int(r.targets[0]) == 2
    target_map = r.maps[0, 2]
    # once the other bands are gone any content of band 2 (bins 128..191) makes it the loudest:
    # the evidence is that band, and the tone at bin 150 lies in its most responsible part
    assert 128 <= int(np.argmax(target_map)) < 192
    assert target_map[128:192].mean() > 2 * np.delete(target_map, np.s_[128:192]).mean()
    assert target_map[150] > 0.8 * target_map.max()
    # mutants without bin 150 but with bin 90 are labelled 1: credit goes to the predicted class
    assert r.maps[0, 1, 90] > 0
    assert r.maps[0, 0].sum() >= 0 and np.all(r.maps >= 0)
    assert int(r.queries[0]) % 14 == 0 and r.queries[0] >= 14 * CFG.iters
    assert 0 <= int(r.depth[0]) <= CFG.tree_depth


def test_planted_narrow_band_binary_one_logit():
    # one logit: class 1 iff bins 100..103 carry magnitude > 50; only the tone at bin 101 does
    x = tone(101) + tone(30) + noise(2)
    r = responsibility_maps(band_mlp, NARROW, x, config=CFG, key=KEY, target_only=True)
    assert r.maps.shape == (1, 1, 257) and int(r.targets[0]) == 1
    assert r.maps[0, 0, 101] == r.maps[0, 0].max() > 0


def test_target_only_keeps_the_target_map(loudest):
    r = responsibility_maps(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY, target_only=True)
    assert r.maps.shape == (1, 1, 257)
    np.testing.assert_array_equal(r.maps[0, 0], loudest.maps[0, 2])
    assert r.queries.tolist() == loudest.queries.tolist()


def test_matches_one_candidate_per_call_loop(loudest):
    ref = responsibility_loop(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY)
    np.testing.assert_allclose(loudest.maps, ref.maps, atol=1e-5)
    assert loudest.queries.tolist() == ref.queries.tolist()
    assert loudest.depth.tolist() == ref.depth.tolist()


def test_two_d_grid_matches_loop_and_finds_region():
    params = jnp.asarray(REGION)
    kw = dict(domain=GRID_STFT, config=CFG, key=KEY)
    got = responsibility_maps(region_model, params, region_clip(), target_only=True, **kw)
    ref = responsibility_loop(region_model, params, region_clip(), **kw)
    assert int(got.targets[0]) == int(ref.targets[0]) == 1
    np.testing.assert_allclose(got.maps[:, 0], ref.maps[:, 1], atol=1e-5)
    assert got.queries.tolist() == ref.queries.tolist()
    m = got.maps[0, 0]
    assert m.shape == GRID_STFT.grid_shape(512)
    top = np.unravel_index(np.argmax(m), m.shape)
    assert REGION[top] == 1.0, f"most responsible tile {top} lies outside the planted region"


def test_independent_of_max_batch(loudest):
    small = responsibility_maps(
        band_mlp, LOUDEST, loudest_clip(), config=SearchConfig(iters=CFG.iters, max_batch=5), key=KEY
    )
    np.testing.assert_array_equal(small.maps, loudest.maps)
    assert small.queries.tolist() == loudest.queries.tolist()


def test_linear_synthesis_equals_synthesising_each_mutant():
    # both grids; max_batch 28 puts 2 refinements in a call, so refinements share chunks
    params = jnp.asarray(REGION)
    for lin in (True, False):
        cfg = SearchConfig(iters=CFG.iters, max_batch=28, linear_synthesis=lin)
        got = responsibility_maps(region_model, params, region_clip(), domain=GRID_STFT, config=cfg, key=KEY)
        if lin:
            first = got
        else:
            np.testing.assert_allclose(got.maps, first.maps, atol=1e-5)
            assert got.queries.tolist() == first.queries.tolist()


@dataclasses.dataclass(frozen=True)
class LevelledTime(Time):
    """Synthesis normalised to unit RMS: not affine in the mask."""

    affine = False

    def synthesize(self, coeffs, mask):
        w = super().synthesize(coeffs, mask)
        return w / jnp.sqrt(jnp.mean(w * w) + 1e-3)


@dataclasses.dataclass(frozen=True)
class LevelledClaimingAffine(LevelledTime):
    affine = True


def window_share(params, x):
    """class 1 iff the mean power of samples 200..264 exceeds twice the clip's mean power."""
    e = jnp.sum(x[:, 200:264] ** 2, axis=-1) / 64
    return jnp.stack([2.0 * jnp.mean(x**2, axis=-1), e], axis=-1)


def test_a_domain_that_is_not_affine_is_synthesised_mutant_by_mutant():
    x = window_clip() + 0.3 * np.random.default_rng(0).standard_normal(T).astype(np.float32)
    kw = dict(config=CFG, key=KEY)
    ref = responsibility_loop(window_share, None, x, domain=LevelledTime(), **kw)
    got = responsibility_maps(window_share, None, x, domain=LevelledTime(), **kw)
    np.testing.assert_allclose(got.maps, ref.maps, atol=1e-5)
    assert int(got.targets[0]) == 1 and got.queries.tolist() == ref.queries.tolist()
    # the flag is what keeps it right: summing normalised parts gives other labels here
    wrong = responsibility_maps(window_share, None, x, domain=LevelledClaimingAffine(), **kw)
    assert not np.allclose(wrong.maps, ref.maps, atol=1e-5)


def test_second_call_does_not_recompile(loudest):
    before = _compiled_stages()
    assert all(c > 0 for c in before)
    other = loudest_clip()[::-1].copy()
    with compilations() as seen:
        responsibility_maps(band_mlp, LOUDEST, other, config=CFG, key=jax.random.key(123))
    assert seen == [] and _compiled_stages() == before
    # the confidence threshold is data, not a compiled setting
    with compilations() as seen:
        responsibility_maps(band_mlp, LOUDEST, other, config=dataclasses.replace(CFG, confidence_filter=0.5), key=KEY)
    assert seen == [] and _compiled_stages() == before


def test_batched_clips_equal_one_at_a_time(loudest):
    x2 = window_clip() + loudest_clip()[::-1]
    k2 = jax.random.key(99)
    kw = dict(config=CFG, target_only=True)
    both = responsibility_maps(band_mlp, LOUDEST, np.stack([loudest_clip(), x2]), key=jnp.stack([KEY, k2]), **kw)
    single2 = responsibility_maps(band_mlp, LOUDEST, x2, key=k2, **kw)
    np.testing.assert_array_equal(both.maps[0, 0], loudest.maps[0, 2])
    np.testing.assert_array_equal(both.maps[1], single2.maps[0])
    assert both.queries.tolist() == [int(loudest.queries[0]), int(single2.queries[0])]


def test_same_key_same_result_other_key_other_trees(loudest):
    again = responsibility_maps(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=jax.random.key(7))
    np.testing.assert_array_equal(again.maps, loudest.maps)
    other = responsibility_maps(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=jax.random.key(8))
    assert not np.array_equal(other.maps, loudest.maps)
    raw = responsibility_maps(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=jax.random.key_data(KEY))
    np.testing.assert_array_equal(raw.maps, loudest.maps)


def test_confidence_filter_matches_the_loop_and_prunes_walks():
    # quiet tones (band sums of about 1) keep the softmax away from saturation; a little noise
    # keeps the labels of tone-free mutants away from float ties
    x = tone(150, 1 / 256) + tone(170, 1 / 256) + tone(90, 1 / 256) + tone(180, 0.8 / 256) + noise(9, 1e-4)
    cfg = SearchConfig(iters=CFG.iters, confidence_filter=0.95)  # no recompile: a traced threshold
    strict = responsibility_maps(band_mlp, LOUDEST, x, config=cfg, key=KEY, target_only=True)
    ref = responsibility_loop(band_mlp, LOUDEST, x, config=cfg, key=KEY)
    np.testing.assert_allclose(strict.maps[0, 0], ref.maps[0, 2], atol=1e-5)
    assert strict.queries.tolist() == ref.queries.tolist()
    loose = responsibility_maps(band_mlp, LOUDEST, x, config=CFG, key=KEY, target_only=True)
    # the filter rejects small, unsure mutants: the walks take other (here: larger, deeper) paths
    assert not np.array_equal(strict.maps, loose.maps) and strict.queries[0] != loose.queries[0]


def test_jit_equals_eager_for_the_box_helpers():
    # The whole walk is checked against its eager NumPy form by the loop-reference tests above;
    # here the traced helpers that cut boxes and build masks run with and without jit.
    words = jnp.asarray(np.array([5, 2**31 + 77, 1234], np.uint32))
    box = jnp.array([0, 1, 3, 40], jnp.int32)
    kids = jax.jit(search._split, static_argnums=2)(words, box, False)
    with jax.disable_jit():
        np.testing.assert_array_equal(np.asarray(search._split(words, box, False)), np.asarray(kids))
    parent = jnp.asarray(np.random.default_rng(0).random((1, 50)) < 0.8)
    bits = jnp.array([True, False, True, False])
    jitted = jax.jit(search._mutant)(parent, box, kids, bits)
    with jax.disable_jit():
        eager = search._mutant(parent, box, kids, bits)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(eager))
    expect = np.asarray(parent).copy()
    expect[:, 3:40] = False
    for j in (0, 2):
        expect[:, int(kids[j, 2]) : int(kids[j, 3])] = True  # kept children are kept whole
    np.testing.assert_array_equal(np.asarray(eager), expect)


def test_mesh_axis_is_checked():
    # equality of sharded and single-device results: tests/test_explain.py (search and extraction)
    mesh = Mesh(np.array(jax.devices()[:1]), ("cand",))
    with pytest.raises(ValueError, match="no axis"):
        responsibility_maps(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY, mesh=mesh, mesh_axis="x")
    assert evaluate.device_batch(6, 1000, Mesh(np.array(jax.devices()[:1]), ("c",)), "c") == 6
    assert evaluate.device_batch(64, 20, None, None) == 20


def _same_search(traced, host, target_only=False):
    """A traced search's result equals the host call's: labels, queries and depths exactly; maps
    up to XLA's float32 division of the credits by 6 (the host divides in float64), which keeps
    every cell's order."""
    np.testing.assert_array_equal(np.asarray(traced.targets), host.targets)
    np.testing.assert_array_equal(np.asarray(traced.queries), host.queries)
    np.testing.assert_array_equal(np.asarray(traced.depth), host.depth)
    np.testing.assert_allclose(np.asarray(traced.target_confidence), host.target_confidence, rtol=1e-6)
    maps = np.asarray(traced.maps)
    assert maps.shape == host.maps.shape and maps.dtype == np.float32
    np.testing.assert_allclose(maps, host.maps, rtol=3e-7, atol=0)
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
    ref = host.maps.reshape(flat.shape)
    np.testing.assert_array_equal(np.argsort(flat, -1, stable=True), np.argsort(ref, -1, stable=True))


def test_inside_jit_and_vmap_equals_the_host_call(loudest):
    # the caller's jit over the clip: the whole search becomes part of the caller's program
    run = jax.jit(lambda x: responsibility_maps(band_mlp, LOUDEST, x, config=CFG, key=KEY))
    _same_search(run(jnp.asarray(loudest_clip())), loudest)
    with pytest.raises(AudioError, match="expected"):  # a traced clip is checked for its shape
        run(jnp.ones((2, 2, T), jnp.float32))
    # an int seed may be traced too (a vmap over seeds)
    traced_seed = jax.jit(lambda s: jax.random.key_data(evaluate.clip_keys(s, 2)))(jnp.int32(7))
    np.testing.assert_array_equal(traced_seed, jax.random.key_data(evaluate.clip_keys(7, 2)))
    # the caller's vmap over clips and keys (a batch axis the search does not see), under jit;
    # multiplicative maps, combined in float32 on the device
    mult = dataclasses.replace(CFG, map_combination="multiplicative")
    clips = [loudest_clip(), window_clip() + loudest_clip()[::-1]]
    keys = [KEY, jax.random.key(99)]
    many = jax.jit(jax.vmap(
        lambda x, k: responsibility_maps(band_mlp, LOUDEST, x, config=mult, key=k, target_only=True)
    ))
    got = many(jnp.asarray(np.stack(clips)), jnp.stack(keys))
    assert got.maps.shape == (2, 1, 1, 257)
    for i in range(2):
        host = responsibility_maps(band_mlp, LOUDEST, clips[i], config=mult, key=keys[i], target_only=True)
        mine = jax.tree_util.tree_map(lambda a: a[i], got)
        _same_search(mine._replace(maps=host.maps), host)  # all but the maps exactly
        np.testing.assert_allclose(np.asarray(mine.maps), host.maps, rtol=1e-5, atol=1e-7)
        assert host.maps.max() == 1.0 and np.asarray(mine.maps).max() == pytest.approx(1.0)


def test_iterations_in_rounds_equal_one_walk(loudest):
    # what a caller that runs the iterations in rounds does: draw once, walk slices, merge
    clips = evaluate.prepare(band_mlp, LOUDEST, loudest_clip(), domain=RFFT(), min_box_size=CFG.min_box_size)
    draws = search.iteration_draws(evaluate.clip_keys(KEY, 1), iters=CFG.iters, tree_depth=CFG.tree_depth)
    for cfg in (CFG, dataclasses.replace(CFG, map_combination="multiplicative")):
        whole = search.walk(band_mlp, LOUDEST, clips, draws, config=cfg)
        rounds = [search.walk(band_mlp, LOUDEST, clips, draws[:, a : a + 2], config=cfg) for a in (0, 2, 4)]
        merged = search.merge_walks(rounds, cfg.map_combination)
        for got, want in zip(merged, whole, strict=True):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert sum(int(r.queries[0]) for r in rounds) == int(whole.queries[0]) > 0
        if cfg is CFG:  # and the result is responsibility_maps' without stopping
            walked = responsibility_maps(band_mlp, LOUDEST, loudest_clip(), config=dataclasses.replace(
                CFG, stop_overlap=None), key=KEY)
            np.testing.assert_array_equal(search.maps_of(merged, clips, (257,)).maps, walked.maps)
            # CFG's default stops after a whole number of rounds: the merge of the rounds it walked
            done = int(loudest.iterations[0]) // 2
            assert 0 < done < 3
            np.testing.assert_array_equal(search.maps_of(search.merge_walks(rounds[:done]), clips, (257,)).maps,
                                          loudest.maps)
    with pytest.raises(ValueError, match="draws must be"):
        search.walk(band_mlp, LOUDEST, clips, draws[0], config=CFG)


def test_sharded_search_keeps_each_fft_on_its_device():
    if len(jax.devices()) < 4:
        pytest.skip("needs 4 devices (conftest.py forces 4 host CPU devices)")
    mesh = Mesh(np.array(jax.devices()[:4]), ("cand",))
    # whole refinements per call (linear synthesis): 64 // 14 // 4 * 4 = 4 refinements, one per device
    cfg = dataclasses.replace(CFG, max_batch=64)
    one = responsibility_maps(band_mlp, LOUDEST, loudest_clip(), config=cfg, key=KEY)
    four = responsibility_maps(band_mlp, LOUDEST, loudest_clip(), config=cfg, key=KEY, mesh=mesh)
    np.testing.assert_array_equal(four.maps, one.maps)
    np.testing.assert_array_equal(four.queries, one.queries)
    # the whole compiled search: per device, one refinement's 5 syntheses and its 14 mutants' FFTs
    # in the model; what crosses devices is labels and confidences (4 devices x 14), no waveform
    run = jax.jit(lambda x: responsibility_maps(band_mlp, LOUDEST, x, config=cfg, key=KEY, mesh=mesh))
    clip = jnp.asarray(loudest_clip())
    hlo = run.lower(clip).compile().as_text()
    assert f"f32[5,{T}]{{1,0}} fft(" in hlo and f"c64[14,{T // 2 + 1}]{{1,0}} fft(" in hlo
    gathers = [line.split("=")[1].split()[0] for line in hlo.splitlines() if "all-gather(" in line]
    assert gathers and set(gathers) <= {"s32[56]{0}", "f32[56]{0}", "s32[56,1]{1,0}", "f32[56,1]{1,0}"}, gathers
    _same_search(run(clip), one)
    # each device transforms its own 8 rows; nothing as large as a waveform batch is gathered
    x = jnp.ones((32, T), jnp.float32)
    f = jax.jit(lambda x: evaluate.on_shards(lambda x: jnp.abs(jnp.fft.rfft(x)), mesh, "cand", (), (x,)))
    hlo = f.lower(x).compile().as_text()
    assert f"c64[8,{T // 2 + 1}]" in hlo and "all-gather" not in hlo
    np.testing.assert_allclose(np.asarray(f(x)), np.abs(np.fft.rfft(np.ones((32, T)))), rtol=1e-5, atol=1e-3)

    # a recurrent model: its scan starts from a fresh carry, as GRU/LSTM layers do
    def recurrent(p, x):
        h, _ = jax.lax.scan(lambda h, xt: (p * h + xt, None), jnp.zeros(x.shape[0]), x.T)
        return jnp.stack([h, -h], axis=1)

    xs = jax.random.normal(jax.random.key(0), (8, 16))
    g = jax.jit(lambda x: evaluate.on_shards(recurrent, mesh, "cand", (jnp.float32(0.5),), (x,)))
    np.testing.assert_allclose(np.asarray(g(xs)), np.asarray(recurrent(0.5, xs)), rtol=1e-6)


def test_inactive_clips_are_not_searched_and_targets_can_be_given():
    r = responsibility_maps(
        band_mlp, LOUDEST, np.stack([loudest_clip(), loudest_clip()]), config=CFG, key=KEY,
        targets=[1, 1], active=[True, False], target_only=True,
    )
    assert r.targets.tolist() == [1, 1]
    assert r.queries[1] == 0 and not r.maps[1].any()
    assert r.queries[0] > 0 and 64 <= int(np.argmax(r.maps[0, 0])) < 128  # band 1 wins once alone
    with pytest.raises(ValueError, match="out of range"):
        responsibility_maps(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY, targets=[4])


def test_one_d_split_is_uniform_over_cut_triples():
    # a box of width 7 has 6 interior cut positions: C(6, 3) = 20 equally likely triples
    words = np.random.default_rng(0).integers(0, 2**32, size=(4000, 3), dtype=np.uint64).astype(np.uint32)
    box = jnp.array([0, 1, 10, 17], jnp.int32)
    kids = np.asarray(jax.jit(jax.vmap(lambda u: search._split(u, box, False)))(jnp.asarray(words)))
    assert (kids[:, :, 3] > kids[:, :, 2]).all(), "every child is non-empty"
    assert (kids[:, 0, 2] == 10).all() and (kids[:, 3, 3] == 17).all()
    assert (kids[:, 1:, 2] == kids[:, :-1, 3]).all(), "children tile the box"
    counts = {t: 0 for t in itertools.combinations(range(11, 17), 3)}
    for k in kids:
        counts[(int(k[1, 2]), int(k[2, 2]), int(k[3, 2]))] += 1
    assert len(counts) == 20 and min(counts.values()) > 140 and max(counts.values()) < 260


def test_two_d_split_makes_four_nonempty_quadrants():
    words = np.random.default_rng(1).integers(0, 2**32, size=(500, 3), dtype=np.uint64).astype(np.uint32)
    box = jnp.array([3, 5, 4, 9], jnp.int32)  # 2 rows x 5 columns
    kids = np.asarray(jax.vmap(lambda u: search._split(u, box, True))(jnp.asarray(words)))
    area = (kids[..., 1] - kids[..., 0]) * (kids[..., 3] - kids[..., 2])
    assert (area > 0).all() and (area.sum(1) == 10).all()
    assert set(kids[:, 0, 3].tolist()) == {5, 6, 7, 8}  # the column cut takes every interior value


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="min_box_size"):
        SearchConfig(min_box_size=3)
    with pytest.raises(ValueError, match="confidence_filter"):
        SearchConfig(confidence_filter=1.5)
    with pytest.raises(ValueError, match="fewer than min_box_size"):
        responsibility_maps(band_mlp, LOUDEST, np.ones(12, np.float32), config=CFG, key=KEY)
    with pytest.raises(ValueError, match="keys"):
        responsibility_maps(band_mlp, LOUDEST, np.ones((2, 512), np.float32), config=CFG, key=jax.random.split(KEY, 3))
    assert RFFT().grid_shape(12) == (7,)
