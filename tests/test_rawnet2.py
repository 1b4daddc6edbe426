"""RawNet2: golden parity (log-softmax and the fc1_gru hidden output) through the public conversion
path, the GRU against torch.nn.GRU, converter and config errors, jit / vmap / masked candidates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import converters
import jsuff
from converters.common import ConversionError
from jsuff.models.base import ModelError
from jsuff.models.rawnet2 import GRULayer, RawNet2Config, hidden_apply
from tests.helpers.families import check_batch_consistency, masked_candidates, random_model

TINY = {
    "first_conv": 64,
    "filts": [8, [8, 8], [8, 12], [12, 12]],
    "blocks": [1, 2],
    "gru_node": 10,
    "nb_gru_layer": 2,
    "nb_fc_node": 6,
    "nb_classes": 2,
    "nb_samp": 8000,
}


@pytest.mark.golden
def test_golden_log_softmax_and_hidden(golden_dir, tmp_path):
    src = golden_dir / "rawnet2"
    config = src / "rawnet2_small.json"
    converters.convert(src / "rawnet2_small.pth", tmp_path / "rn2", arch="rawnet2", config=config)
    model = jsuff.load_model(tmp_path / "rn2")
    assert model.labels == ("spoof", "bonafide")
    assert (model.input.length, model.input.pad) == (64600, "repeat")

    gold = np.load(src / "golden_outputs.npz")
    log_probs, hidden = jax.jit(hidden_apply(model))(model.params, jnp.asarray(gold["waveforms"]))
    np.testing.assert_allclose(log_probs, gold["log_softmax"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(hidden, gold["last_hidden"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(np.argmax(log_probs, -1), gold["log_softmax"].argmax(-1))


@pytest.mark.golden
def test_bad_keys_are_all_named(golden_dir, tmp_path):
    import torch

    src = golden_dir / "rawnet2"
    sd = torch.load(src / "rawnet2_small.pth", map_location="cpu", weights_only=True)
    sd.pop("gru.bias_hh_l2")
    sd["fc_attention3.0.weight"] = torch.zeros(32, 20)
    sd["gru.weight_ih_l3"] = torch.zeros(192, 64)
    torch.save(sd, tmp_path / "bad.pth")
    config = src / "rawnet2_small.json"
    with pytest.raises(ConversionError) as e:
        converters.convert(tmp_path / "bad.pth", tmp_path / "out", arch="rawnet2", config=config)
    msg = str(e.value)
    assert "gru/2/hh/bias" in msg
    assert "fc_attention3.0.weight -> attention/3/kernel: got (20, 32), expected (32, 32)" in msg
    assert "gru.weight_ih_l3 -> gru/3/ih/kernel" in msg  # a fourth GRU layer the config lacks
    assert not (tmp_path / "out").exists()


def test_gru_layer_matches_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = torch.nn.GRU(5, 7, num_layers=1, batch_first=True)
    with torch.no_grad():  # non-zero biases, so that b_hn's place inside r * (...) matters
        for p in (ref.bias_ih_l0, ref.bias_hh_l0):
            p.uniform_(-1.0, 1.0)
    layer = GRULayer(5, 7, rngs=nnx.Rngs(0))
    layer.ih.kernel[...] = jnp.asarray(ref.weight_ih_l0.detach().numpy().T)
    layer.ih.bias[...] = jnp.asarray(ref.bias_ih_l0.detach().numpy())
    layer.hh.kernel[...] = jnp.asarray(ref.weight_hh_l0.detach().numpy().T)
    layer.hh.bias[...] = jnp.asarray(ref.bias_hh_l0.detach().numpy())
    x = np.random.default_rng(0).standard_normal((3, 11, 5)).astype(np.float32)
    want = ref(torch.from_numpy(x))[0].detach().numpy()
    np.testing.assert_allclose(layer(jnp.asarray(x)), want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(layer, jnp.asarray(x)), want, atol=1e-5, rtol=0)


def test_config_layout_and_errors(tmp_path):
    cfg = RawNet2Config.from_mapping({**TINY, "blocks": [2, 4], "filts": [20, [20, 20], [20, 32], [32, 32]]})
    assert cfg.block_channels() == [(20, 20), (20, 20), (20, 32), (32, 32), (32, 32), (32, 32)]
    with pytest.raises(ModelError, match="do not chain"):
        RawNet2Config.from_mapping({**TINY, "filts": [8, [4, 8], [8, 12]]})
    with pytest.raises(ModelError, match="unknown keys: gru_nodes"):
        RawNet2Config.from_mapping({**TINY, "gru_nodes": 3})
    with pytest.raises(ConversionError, match="needs its model config"):
        converters.convert(tmp_path, None, arch="rawnet2")
    model = random_model("rawnet2", TINY, labels=("spoof", "bonafide"))
    shortest = 64 + 3**4  # 65 taps, a pool of 3 after the front end and after each of 3 blocks
    with pytest.raises(ValueError, match=f"at least {shortest} samples"):
        jax.eval_shape(model.apply, model.params, jnp.zeros((1, shortest - 1)))
    assert jax.eval_shape(model.apply, model.params, jnp.zeros((2, shortest))).shape == (2, 2)


def test_tiny_model_batches_jit_vmap_and_masked_candidates():
    cfg = RawNet2Config.from_mapping(TINY)
    model = random_model("rawnet2", TINY, labels=("spoof", "bonafide"), input=cfg.input_policy(), seed=1)
    clip = np.random.default_rng(2).standard_normal(8000).astype(np.float32)
    batch = masked_candidates(model.prepare(clip), 8, seed=3)
    out = check_batch_consistency(model.apply, model.params, batch, atol=1e-5)
    np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, atol=1e-5)  # log-probabilities
    assert np.ptp(out, axis=0).max() > 0
