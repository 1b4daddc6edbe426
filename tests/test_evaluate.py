"""The model-evaluation layer: one bounded cache that holds its functions, prediction in batches
and on shards, clips prepared once, and the docstring examples of the engine's modules."""

import collections
import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from jsuff import evaluate
from jsuff.audio import AudioError
from jsuff.domains import RFFT
from jsuff.models import Model
from jsuff.app.devices import predict_logits
from tests.helpers.toys import band_mlp, compilations, LOUDEST, loudest_clip

X = np.random.default_rng(0).standard_normal((10, 16)).astype(np.float32)


def linear(p, x):
    return x[:, :3] * p


@pytest.fixture
def small_cache(monkeypatch):
    """An empty cache of 3 entries for this test; the suite's own entries stay untouched."""
    monkeypatch.setattr(evaluate, "_CACHE", collections.OrderedDict())
    monkeypatch.setattr(evaluate, "CACHE_SIZE", 3)


def test_the_cache_is_bounded_and_holds_the_functions_it_compiled(small_cache):
    refs = []
    for k in range(5):
        f = lambda p, x, k=k: x[:, :2] * p + k  # noqa: E731  (a fresh function object each time)
        refs.append(weakref.ref(f))
        np.testing.assert_array_equal(evaluate.predict(f, 1.0, X[:2]), X[:2, :2] + k)
        del f
    gc.collect()
    assert len(evaluate._CACHE) == 3
    # the three most recent are held by their entries, so no later function can reuse their id
    # while they are cached; the two pushed out are freed with their compilations
    assert [r() is not None for r in refs] == [False, False, True, True, True]
    # least recently *used* goes first: touch the oldest survivor, add one, and the next goes
    evaluate.predict(refs[2](), 1.0, X[:2])
    evaluate.predict(linear, 1.0, X[:2])
    gc.collect()
    assert [r() is not None for r in refs] == [False, False, True, False, True]


def test_cache_size_counts_jax_compilations_per_function(small_cache):
    evaluate.predict(linear, 1.0, X)
    evaluate.predict(linear, 1.0, X[:4])  # another shape: JAX compiles again under the same entry
    assert evaluate._logits.cache_size(linear) == 2 and len(evaluate._CACHE) == 1
    assert evaluate._logits.cache_size(band_mlp) == 0


def test_predict_in_batches_equals_one_call_and_does_not_recompile():
    whole = evaluate.predict(linear, 2.0, X)
    assert whole.shape == (10, 3)
    batched = evaluate.predict(linear, 2.0, X, batch=4)  # 4 + 4 + 2 padded to 4
    np.testing.assert_array_equal(np.asarray(batched), np.asarray(whole))
    np.testing.assert_array_equal(np.asarray(evaluate.predict(linear, 2.0, jnp.asarray(X), batch=4)), np.asarray(whole))
    before = evaluate._logits.cache_size(linear)
    with compilations() as seen:
        again = evaluate.predict(linear, 2.0, X[::-1].copy(), batch=4)
    assert seen == [] and evaluate._logits.cache_size(linear) == before
    np.testing.assert_array_equal(np.asarray(again), np.asarray(whole)[::-1])


def test_predict_on_shards_equals_one_device():
    if len(jax.devices()) < 4:
        pytest.skip("needs 4 devices (conftest.py forces 4 host CPU devices)")
    mesh = Mesh(np.array(jax.devices()[:4]), ("clips",))
    one = evaluate.predict(band_mlp, LOUDEST, np.stack([loudest_clip()] * 6), batch=3)
    four = evaluate.predict(band_mlp, LOUDEST, np.stack([loudest_clip()] * 6), batch=3, mesh=mesh)  # 3 -> 4
    np.testing.assert_allclose(np.asarray(four), np.asarray(one), rtol=1e-6)
    with pytest.raises(ValueError, match="no axis"):
        evaluate.predict(linear, 1.0, X, mesh=mesh, mesh_axis="batch")


def test_models_and_studies_predict_through_the_layer():
    def apply(p, x):  # a function of its own, so the count below is this test's
        return linear(p, x)

    m = Model.from_function(apply, jnp.float32(2.0), sample_rate=8000, labels=["a", "b", "c"])
    np.testing.assert_array_equal(np.asarray(m(X)), X[:, :3] * 2)
    np.testing.assert_array_equal(predict_logits(m, X, batch=4), X[:, :3] * 2)
    assert evaluate._logits.cache_size(m.apply) == 2  # all 10 at once, and batches of 4
    assert predict_logits(m, X[:0]).shape == (0, 3)


def test_prepare_checks_analyses_and_classifies_once():
    c = evaluate.prepare(band_mlp, LOUDEST, loudest_clip(), domain=RFFT(), min_box_size=10)
    assert c.waveforms.shape == (1, 512) and c.targets.tolist() == [2] and c.logits.shape == (1, 4)
    np.testing.assert_allclose(c.confidence, jax.nn.softmax(c.logits)[:, 2], rtol=1e-6)
    assert c.coeffs.values.shape == (1, 257)
    given = evaluate.prepare(band_mlp, LOUDEST, np.stack([loudest_clip()] * 2), domain=RFFT(), targets=1)
    assert given.targets.tolist() == [1, 1]
    with pytest.raises(AudioError, match="too short.*fewer than min_box_size=10"):
        evaluate.prepare(band_mlp, LOUDEST, np.ones(12, np.float32), domain=RFFT(), min_box_size=10)
    with pytest.raises(AudioError, match=r"waveforms\[1\] is all zeros"):
        evaluate.prepare(band_mlp, LOUDEST, np.stack([loudest_clip(), np.zeros(512, np.float32)]), domain=RFFT(),
                         allow_silence=False)
    with pytest.raises(ValueError, match="out of range for 4 classes"):
        evaluate.prepare(band_mlp, LOUDEST, loudest_clip(), domain=RFFT(), targets=4)
