"""explain / explain_many end to end: planted answers on every grid, invariances, saving, bad input."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from jsuff import ExtractConfig, Explanation, SearchConfig, Time, explain, explain_many, load_audio
from jsuff.audio import AudioError
from tests.helpers.toys import (
    BOTH,
    CFG,
    GRID_STFT,
    KEY,
    LOUDEST,
    NARROW,
    REGION,
    band_mlp,
    both_clip,
    compilations,
    loudest_clip,
    noise,
    region_clip,
    region_model,
    tone,
    window_clip,
    window_model,
)


@pytest.fixture(scope="module")
def loudest() -> Explanation:
    return explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY)


def _cells(e: Explanation) -> np.ndarray:
    return np.flatnonzero(e.mask)


def test_multiclass_loudest_band(loudest):
    e = loudest
    assert e.target == 2 and e.verified and e.found and e.minimal is True and e.removable_chunks == ()
    kept = _cells(e)
    assert 0 < kept.size <= e.chunk_size == CFG.min_box_size
    assert ((kept >= 128) & (kept < 192)).all(), f"kept bins {kept} leave band 2"
    assert e.sufficient_label == 2 and e.empty_label == 0 and not e.empty_is_target
    assert e.size_fraction == pytest.approx(kept.size / 257)
    assert 0 < e.energy_fraction < 1
    # the default search stopped after 4 of the 6 iterations (its top set held from round 1 to 2);
    # its first chunk is band-2 noise, sufficient once the other bands are gone but not necessary.
    # All 6 iterations in one round rank the tone at bin 150 first: that set is also necessary.
    assert e.search_iterations == 4
    walked = explain(band_mlp, LOUDEST, loudest_clip(), config=dataclasses.replace(CFG, stop_overlap=None), key=KEY)
    assert walked.search_iterations == CFG.iters and walked.necessary and walked.mask[150]
    assert walked.verified and walked.minimal is True and 0 < walked.energy_fraction < 1
    # the clip, the search, empty + full signals, the scan (prefix 1 alone: it passes), no
    # certificate row (removing the one chunk leaves the empty signal, already known not to pass),
    # the final check (the set and its complement)
    assert e.queries == 1 + e.search_queries + 2 + 1 + 0 + 2
    # a scan whose first call is its widest asks all 26 prefixes of 10 bins at once
    wide = explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY,
                   extract=ExtractConfig(prefixes_first_call=256))
    np.testing.assert_array_equal(wide.mask, e.mask)
    assert wide.queries == 1 + e.search_queries + 2 + 26 + 0 + 2
    assert e.sufficient_waveform.dtype == np.float32 and e.sufficient_waveform.shape == (512,)
    assert e.responsibility.shape == (257,) and e.mask.dtype == bool


def test_second_explain_does_not_recompile(loudest):
    from jsuff import evaluate, extract, search

    def stages():  # JAX's own cache sizes of every jitted stage that calls band_mlp
        calls_model = (evaluate.analyze_and_predict, search._walk, extract._classify_sets)
        return [f.cache_size(band_mlp) for f in calls_model]

    before = stages()
    assert all(c > 0 for c in before)
    with compilations() as seen:
        again = explain(band_mlp, LOUDEST, loudest_clip()[::-1].copy(), config=CFG, key=jax.random.key(11))
    assert seen == [] and stages() == before and again.verified


def test_two_bands_needed_at_once():
    e = explain(band_mlp, BOTH, both_clip(), config=CFG, key=KEY, extract=ExtractConfig(prune=True))
    assert e.target == 1 and e.verified and e.minimal is True
    assert e.mask[40] and e.mask[208], "both tones are evidence"
    kept = _cells(e)
    assert ((kept < 64) | (kept >= 192)).all()


def test_binary_one_logit_narrow_band_and_the_trivial_case():
    e = explain(band_mlp, NARROW, tone(101) + tone(30) + noise(2), config=CFG, key=KEY)
    assert e.target == 1 and e.verified and e.minimal is True and e.mask[101] and not e.mask[30]
    assert e.responsibility.argmax() == 101 or e.responsibility[101] == e.responsibility.max()
    trivial = explain(band_mlp, NARROW, noise(2), config=CFG, key=KEY)
    assert trivial.target == 0 and trivial.empty_is_target and trivial.verified and trivial.minimal
    assert not trivial.mask.any() and trivial.search_queries == 0 and trivial.queries == 3
    assert not trivial.responsibility.any() and trivial.size_fraction == 0.0 and trivial.energy_fraction == 0.0
    assert not trivial.sufficient_waveform.any()


def test_stft_region_in_time_and_frequency():
    e = explain(
        region_model, jnp.asarray(REGION), region_clip(), domain=GRID_STFT, config=CFG, key=KEY,
        extract=ExtractConfig(prune=True),
    )
    assert e.target == 1 and e.verified and e.minimal is True
    assert e.mask.shape == e.responsibility.shape == GRID_STFT.grid_shape(512)
    top = np.unravel_index(np.argmax(e.responsibility), e.mask.shape)
    assert REGION[top] == 1.0
    # the region is 45 of 1089 tiles; the kept tiles are mostly inside it
    assert REGION[e.mask].mean() >= 0.4, np.argwhere(e.mask).tolist()


def test_time_segments_in_the_window():
    e = explain(window_model, None, window_clip(), domain=Time(segment=8), config=CFG, key=KEY)
    assert e.target == 1 and e.verified and e.minimal is True
    kept = _cells(e)
    assert ((kept >= 25) & (kept < 33)).mean() >= 0.8, kept
    assert e.energy_fraction > 0.9  # the window holds nearly all of the clip's energy


def test_batched_equals_one_at_a_time(loudest):
    other = tone(90) + 0.3 * tone(20) + noise(6)  # band 1 wins
    k2 = jax.random.key(3)
    many = explain_many(band_mlp, LOUDEST, np.stack([loudest_clip(), other]), config=CFG, keys=jnp.stack([KEY, k2]))
    one = explain(band_mlp, LOUDEST, other, config=CFG, key=k2)
    for got, want in ((many[0], loudest), (many[1], one)):
        np.testing.assert_array_equal(got.mask, want.mask)
        np.testing.assert_array_equal(got.responsibility, want.responsibility)
        np.testing.assert_array_equal(got.sufficient_waveform, want.sufficient_waveform)
        assert got.summary() == want.summary()
    assert many[1].target == 1
    split = explain_many(band_mlp, LOUDEST, np.stack([loudest_clip(), other]), config=CFG, key=KEY)
    np.testing.assert_array_equal(
        split[1].mask, explain(band_mlp, LOUDEST, other, config=CFG, key=jax.random.split(KEY, 2)[1]).mask
    )


def test_independent_of_prefixes_per_call_and_devices(loudest):
    small = explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY, extract=ExtractConfig(prefixes_per_call=1))
    np.testing.assert_array_equal(small.mask, loudest.mask)
    if len(jax.devices()) < 4:
        pytest.skip("needs 4 devices (conftest.py forces 4 host CPU devices)")
    mesh = Mesh(np.array(jax.devices()[:4]), ("cand",))
    sharded = explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY, mesh=mesh)
    np.testing.assert_array_equal(sharded.mask, loudest.mask)
    np.testing.assert_array_equal(sharded.responsibility, loudest.responsibility)
    # the same explanation; the extraction's queries count the rows the model evaluated, and on 4
    # devices its three calls (the empty and full signals: 2 rows, the scan: 1, the final check:
    # 2) are each rounded up to 4 rows
    assert {**sharded.summary(), "queries": 0} == {**loudest.summary(), "queries": 0}
    assert sharded.search_queries == loudest.search_queries
    assert sharded.queries == loudest.queries + (4 - 2) + (4 - 1) + (4 - 2)
    # parameters committed to one device (as restored from a checkpoint) are replicated for the mesh
    committed = jax.device_put(LOUDEST, jax.devices()[0])
    placed = explain(band_mlp, committed, loudest_clip(), config=CFG, key=KEY, mesh=mesh)
    np.testing.assert_array_equal(placed.mask, loudest.mask)


def test_modes_and_explicit_target(loudest):
    c = explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY, extract=ExtractConfig(mode="contrastive"))
    assert c.necessary and c.verified and c.label_without != 2 and c.mode == "contrastive"
    t = explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY, target=1)
    assert t.target == 1 and t.verified and ((_cells(t) >= 64) & (_cells(t) < 128)).all()
    with pytest.raises(ValueError, match="out of range"):
        explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY, target=7)


def test_chunk_size_reaches_the_extraction(loudest):
    e = explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY, extract=ExtractConfig(chunk_size=4))
    np.testing.assert_array_equal(e.responsibility, loudest.responsibility)  # the same search
    assert e.chunk_size == 4 and e.settings["extract"]["chunk_size"] == 4 and e.verified and e.minimal
    kept = _cells(e)
    assert 0 < kept.size <= 4 < loudest.chunk_size and ((kept >= 128) & (kept < 192)).all()


def test_save_and_summary(loudest, tmp_path):
    out = loudest.save(tmp_path / "ex", sample_rate=16000)
    wav, sr = load_audio(out / "sufficient.wav")
    assert sr == 16000
    np.testing.assert_array_equal(wav, loudest.sufficient_waveform)
    arrays = np.load(out / "arrays.npz")
    assert set(arrays.files) == {"mask", "responsibility", "sufficient_waveform"}
    np.testing.assert_array_equal(arrays["mask"], loudest.mask)
    summary = json.loads((out / "summary.json").read_text())
    for field in ("target", "target_confidence", "verified", "minimal", "queries", "size_fraction",
                  "energy_fraction", "empty_label", "empty_is_target", "settings"):
        assert field in summary
    assert summary["sample_rate"] == 16000 and summary["kept_cells"] == int(loudest.mask.sum())
    assert summary["settings"]["domain"]["name"] == "rfft" and summary["settings"]["search"]["iters"] == CFG.iters
    with pytest.raises(dataclasses.FrozenInstanceError):
        loudest.target = 3  # type: ignore[misc]


def test_bad_input():
    with pytest.raises(AudioError, match="all zeros"):
        explain(band_mlp, LOUDEST, np.zeros(512, np.float32), config=CFG, key=KEY)
    with pytest.raises(AudioError, match=r"waveforms\[1\] is all zeros"):
        explain_many(band_mlp, LOUDEST, np.stack([loudest_clip(), np.zeros(512, np.float32)]), config=CFG, key=KEY)
    with pytest.raises(AudioError, match="too short"):
        explain(band_mlp, LOUDEST, np.ones(16, np.float32), config=CFG, key=KEY)
    with pytest.raises(AudioError, match="too short"):
        explain(window_model, None, np.ones(64, np.float32), domain=Time(segment=8), config=CFG, key=KEY)
    bad = loudest_clip()
    bad[3] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        explain(band_mlp, LOUDEST, bad, config=CFG, key=KEY)
    with pytest.raises(AudioError, match="zero-length"):
        explain(band_mlp, LOUDEST, np.zeros(0, np.float32), config=CFG, key=KEY)
    with pytest.raises(AudioError, match="one clip"):
        explain(band_mlp, LOUDEST, np.ones((2, 512), np.float32), config=CFG, key=KEY)
    # issue 16: key= may be left out (seed 0), so only key= and keys= together are refused
    with pytest.raises(ValueError, match="not both"):
        explain_many(band_mlp, LOUDEST, np.ones((2, 512), np.float32), config=CFG, key=KEY,
                     keys=jnp.stack([KEY, KEY]))
    with pytest.raises(ValueError, match="min_box_size"):
        SearchConfig(min_box_size=2)
