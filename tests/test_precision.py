"""The bfloat16 candidate evaluation (``SearchConfig.compute_dtype``): it runs, it computes in
bfloat16, its labels agree with float32 on most candidates, and the default path is unchanged."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jsuff.domains import RFFT
from jsuff.evaluate import class_logits, masked_logits, model_logits, top1_and_confidence
from jsuff.search import SearchConfig, responsibility_loop, responsibility_maps

T = 512
FRAME = 32


def frame_mlp(params: dict, x: jax.Array) -> jax.Array:
    """No FFT (XLA's FFTs are float32-only): logits = mean over frames of relu(frame @ w1) @ w2.
    Computes in whatever dtype its parameters and input have."""
    frames = x.reshape(x.shape[0], -1, FRAME)
    h = jax.nn.relu(frames @ params["w1"] + params["b1"][None, None])
    return jnp.mean(h, axis=1) @ params["w2"] + params["b2"][None]


def _params(seed: int = 0, classes: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    p = dict(w1=rng.normal(size=(FRAME, 16)), b1=rng.normal(size=16) * 0.1, w2=rng.normal(size=(16, classes)),
             b2=np.zeros(classes))
    return {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}


PARAMS = _params()


def _clip(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    x = sum(np.cos(2 * np.pi * f * t / T) * a for f, a in zip(rng.integers(5, 200, 3), rng.uniform(0.2, 1, 3)))
    return (x + 0.05 * rng.standard_normal(T)).astype(np.float32)


def _candidates(n: int, seed: int) -> tuple[jax.Array, jax.Array]:
    """``n`` random keep-masks over the rfft grid of one clip (mixed densities), and its coeffs."""
    rng = np.random.default_rng(seed)
    density = rng.uniform(0.05, 0.95, size=(n, 1))
    masks = rng.uniform(size=(n, T // 2 + 1)) < density
    coeffs = jax.vmap(RFFT().analyze)(jnp.asarray(_clip(seed))[None])
    return coeffs, jnp.asarray(masks)


@jax.jit
def _both(params: dict, coeffs, masks: jax.Array) -> tuple[jax.Array, jax.Array]:
    clip = jnp.zeros(masks.shape[0], jnp.int32)
    f32 = masked_logits(frame_mlp, params, RFFT(), coeffs, clip, masks)
    bf16 = masked_logits(frame_mlp, params, RFFT(), coeffs, clip, masks, compute_dtype="bfloat16")
    return f32, bf16


def test_bfloat16_labels_agree_with_float32_on_most_candidates():
    coeffs, masks = _candidates(256, seed=1)
    f32, bf16 = _both(PARAMS, coeffs, masks)
    assert f32.dtype == bf16.dtype == jnp.float32  # logits come back as float32
    labels32, labels16 = np.asarray(f32.argmax(-1)), np.asarray(bf16.argmax(-1))
    assert len(np.unique(labels32)) > 1  # the candidates do not all get one label
    assert (labels32 == labels16).mean() >= 0.9
    # and the evaluation really ran in bfloat16: not bit-equal, within bfloat16's rounding
    diff = np.abs(np.asarray(f32) - np.asarray(bf16))
    assert diff.max() > 0
    assert diff.max() < 0.1 * np.abs(np.asarray(f32)).max()


def test_model_call_sees_bfloat16_inputs_and_parameters():
    seen = {}

    def spy(params: dict, x: jax.Array) -> jax.Array:
        seen["x"], seen["w1"] = x.dtype, params["w1"].dtype
        return frame_mlp(params, x)

    x = jnp.asarray(np.stack([_clip(0), _clip(1)]))
    out = jax.jit(lambda p, x: model_logits(spy, p, x, "bfloat16"))(PARAMS, x)
    assert (seen["x"], seen["w1"], out.dtype) == (jnp.bfloat16, jnp.bfloat16, jnp.float32)
    out = jax.jit(lambda p, x: model_logits(spy, p, x))(PARAMS, x)
    assert (seen["x"], seen["w1"], out.dtype) == (jnp.float32, jnp.float32, jnp.float32)


def test_default_path_unchanged():
    coeffs, masks = _candidates(16, seed=2)
    clip = jnp.zeros(16, jnp.int32)
    new = masked_logits(frame_mlp, PARAMS, RFFT(), coeffs, clip, masks)
    waves = jax.vmap(RFFT().synthesize)(jax.tree_util.tree_map(lambda a: a[clip], coeffs), masks)
    np.testing.assert_array_equal(np.asarray(new), np.asarray(class_logits(frame_mlp(PARAMS, waves))))
    # the explicit default equals the implicit one, map for map
    x, key = _clip(3), jax.random.key(0)
    a = responsibility_maps(frame_mlp, PARAMS, x, config=SearchConfig(iters=3), key=key)
    b = responsibility_maps(frame_mlp, PARAMS, x, config=SearchConfig(iters=3, compute_dtype="float32"), key=key)
    np.testing.assert_array_equal(a.maps, b.maps)
    assert SearchConfig().compute_dtype == "float32"


def test_bfloat16_search_runs_and_matches_its_loop_reference():
    x, key = _clip(4), jax.random.key(1)
    cfg = SearchConfig(iters=3, compute_dtype="bfloat16", max_batch=16)
    r = responsibility_maps(frame_mlp, PARAMS, x, config=cfg, key=key)
    assert r.maps.shape == (1, 4, T // 2 + 1) and int(r.queries[0]) > 0
    loop = responsibility_loop(frame_mlp, PARAMS, x, config=cfg, key=key)
    np.testing.assert_allclose(r.maps, loop.maps, atol=1e-5)
    f32 = responsibility_maps(frame_mlp, PARAMS, x, config=SearchConfig(iters=3, max_batch=16), key=key)
    assert int(r.targets[0]) == int(f32.targets[0])


def test_bfloat16_wav2vec2_runs_its_layers_in_bfloat16():
    from jsuff.models.wav2vec2 import W2V2Config, Wav2Vec2Classifier

    cfg = W2V2Config(num_labels=3, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=20, conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2),
                     num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, classifier_proj_size=4)
    graph, state = nnx.split(Wav2Vec2Classifier(cfg, rngs=nnx.Rngs(0)))

    def apply(params, x):
        return nnx.merge(graph, params)(x)

    x = jnp.asarray(np.stack([_clip(5), _clip(6)]))

    def feats(s, x):  # dtype only: traced, not compiled
        return jax.eval_shape(lambda s, x: nnx.merge(graph, s).features(x), s, x).dtype

    half = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), state)
    with jax.numpy_dtype_promotion("standard"):
        assert feats(half, x.astype(jnp.bfloat16)) == jnp.bfloat16
    assert feats(state, x) == jnp.float32
    f32 = jax.jit(lambda p, x: model_logits(apply, p, x))(state, x)
    bf16 = jax.jit(lambda p, x: model_logits(apply, p, x, "bfloat16"))(state, x)
    assert bf16.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(bf16), np.asarray(f32), atol=0.1)


def test_bad_compute_dtype_is_refused():
    with pytest.raises(ValueError, match="compute_dtype"):
        SearchConfig(compute_dtype="float16")


def test_top1_and_confidence_reads_bfloat16_logits():
    logits = jnp.asarray([[0.0, 2.0, 1.0]], jnp.bfloat16)
    label, conf = top1_and_confidence(logits, jnp.asarray([1]))
    assert int(label[0]) == 1 and conf.dtype == jnp.float32
