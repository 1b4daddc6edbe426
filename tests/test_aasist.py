"""AASIST / AASIST-L: golden parity through the public conversion path, the sinc front end, graph
pooling ties, converter and config errors, jit / vmap / masked candidates."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import converters
import jsuff
from jsuff.app import cli
from converters.common import ConversionError
from jsuff.models._family import init_rngs
from jsuff.models.aasist import AasistConfig, GraphPool
from jsuff.models.base import ModelError, build_model, fit_length
from jsuff.models.sinc import mel_band_edges, mel_sinc_filters
from tests.helpers.families import check_batch_consistency, masked_candidates, random_model

TINY = {
    "nb_samp": 12000,
    "first_conv": 16,
    "filts": [70, [1, 4], [4, 4], [4, 8], [8, 8]],
    "gat_dims": [8, 6],
    "pool_ratios": [0.5, 0.7, 0.5, 0.5],
    "temperatures": [2.0, 2.0, 100.0, 100.0],
}


@pytest.mark.golden
@pytest.mark.parametrize("name,key", [("AASIST", "logits_AASIST"), ("AASIST-L", "logits_AASIST_L")])
def test_golden_logits(golden_dir, tmp_path, name, key):
    src = golden_dir / "aasist"
    converters.convert(src / f"{name}.pth", tmp_path / name, arch="aasist", config=src / f"{name}.json")
    model = jsuff.load_model(tmp_path / name)
    assert model.labels == ("spoof", "bonafide") and model.sample_rate == 16000
    assert (model.input.length, model.input.pad, model.input.crop) == (64600, "repeat", "start")

    gold = np.load(src / "golden_outputs.npz")
    logits = np.asarray(model(gold["waveforms"]))
    np.testing.assert_allclose(logits, gold[key], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(logits.argmax(-1), gold[key].argmax(-1))


@pytest.mark.golden
def test_cli_wrapped_training_config_and_bad_keys(golden_dir, tmp_path):
    import torch

    src = golden_dir / "aasist"
    wrapped = tmp_path / "AASIST-L.conf"
    published = json.loads((src / "AASIST-L.json").read_text())
    wrapped.write_text(json.dumps({"batch_size": 24, "model_config": published}))
    out = tmp_path / "cli"
    argv = ["convert", str(src / "AASIST-L.pth"), "--arch", "aasist", "--out", str(out)]
    assert cli.main(argv) == 2  # no config: a one-line error, nothing written
    assert not out.exists()
    assert cli.main([*argv, "--config", str(wrapped)]) == 0
    assert jsuff.load_model(out).config["gat_dims"] == [24, 32]

    sd = torch.load(src / "AASIST-L.pth", map_location="cpu", weights_only=True)
    sd.pop("GAT_layer_T.att_weight")
    sd["encoder.2.0.conv1.weight"] = torch.zeros(24, 32, 3, 3)
    sd["extra.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ConversionError) as e:
        converters.convert(tmp_path / "bad.pth", tmp_path / "out", arch="aasist", config=src / "AASIST-L.json")
    msg = str(e.value)
    assert "gat_t/att_weight" in msg and "extra.weight" in msg
    assert "encoder.2.0.conv1.weight -> encoder/2/conv1/kernel: got (3, 3, 32, 24)" in msg
    assert not (tmp_path / "out").exists()

    # The same weights under the AASIST (not -L) config: every mis-shaped key at once.
    with pytest.raises(ConversionError, match=r"mis-shaped \(\d\d+\)"):
        converters.convert(src / "AASIST-L.pth", None, arch="aasist", config=src / "AASIST.json")


def test_missing_config_and_config_errors(tmp_path):
    with pytest.raises(ConversionError, match="needs its model config"):
        converters.convert(tmp_path, None, arch="aasist")
    bad = dict(TINY, gat_dim=[1, 2])
    del bad["temperatures"]
    with pytest.raises(ModelError, match=r"missing keys: temperatures(.|\n)*unknown keys: gat_dim"):
        build_model("aasist", bad, sample_rate=16000, labels=("a", "b"))
    with pytest.raises(ModelError, match="do not chain|does not feed"):
        build_model("aasist", dict(TINY, filts=[70, [1, 4], [5, 4], [4, 8], [8, 8]]), sample_rate=1, labels="ab")


def test_sinc_filters_match_the_windowed_ideal_band_pass():
    # Independent float64 construction: h[n] = w[n] * (2 f2 sinc(2 f2 n) - 2 f1 sinc(2 f1 n)), f in
    # cycles per sample, w the Hamming window; the port's float32 arithmetic stays within 1e-6.
    filters = mel_sinc_filters(70, 128, 16000)
    assert filters.shape == (129, 70) and filters.dtype == np.float32
    edges = mel_band_edges(70, 16000) / 16000
    assert edges[0] == 0 and np.isclose(edges[-1], 0.5)
    n = np.arange(-64, 65)
    window = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(129) / 128)
    lo, hi = edges[:-1, None], edges[1:, None]
    ideal = 2 * hi * np.sinc(2 * hi * n) - 2 * lo * np.sinc(2 * lo * n)
    np.testing.assert_allclose(filters, (window * ideal).T, atol=1e-6)
    np.testing.assert_array_equal(filters, filters[::-1])  # symmetric: linear phase
    # each filter passes its own band: the peak of its response lies between its edges
    resp = np.abs(np.fft.rfft(filters.astype(np.float64), n=8192, axis=0))
    peak = resp.argmax(axis=0) / 8192
    # (bands within a main lobe of 0 Hz peak at 0 Hz: their negative-frequency image overlaps)
    away = edges[:-1] > 2 / 129
    assert away.sum() > 60
    assert np.all(((peak >= edges[:-1]) & (peak <= edges[1:]))[away])
    assert mel_sinc_filters(20, 1024).shape == (1025, 20)  # even lengths get one more tap


def test_graph_pool_order_and_ties():
    pool = GraphPool(0.5, 3, rngs=init_rngs(nnx.Rngs(0)))
    h = jnp.arange(1.0, 19.0).reshape(1, 6, 3)
    # scores from the first feature: descending order of the kept nodes
    pool.proj.kernel[...] = jnp.array([[1.0], [0.0], [0.0]]) * jnp.array([[0.1]])
    pool.proj.bias[...] = jnp.zeros(1)
    kept = pool(h[:, ::-1])
    s = jax.nn.sigmoid(h[0, ::-1, :1] * 0.1)
    np.testing.assert_allclose(kept[0], (h[0, ::-1] * s)[:3], rtol=1e-6)
    # equal scores: the lower node index comes first, eagerly and under jit
    pool.proj.kernel[...] = jnp.zeros((3, 1))
    np.testing.assert_allclose(pool(h)[0], h[0, :3] * 0.5)
    np.testing.assert_allclose(nnx.jit(lambda p, h: p(h))(pool, h)[0], h[0, :3] * 0.5)
    assert pool(h[:, :1]).shape == (1, 1, 3)  # never fewer than one node


def test_tiny_model_batches_jit_vmap_and_masked_candidates():
    policy = AasistConfig.from_mapping(TINY).input_policy()
    model = random_model("aasist", TINY, labels=("spoof", "bonafide"), input=policy, seed=3)
    rng = np.random.default_rng(0)
    clip = rng.standard_normal(9000).astype(np.float32) * 0.1
    x = fit_length(clip, model.input)  # short clip: repeat-padded to nb_samp
    assert x.shape == (12000,) and np.array_equal(x[9000:], clip[:3000])
    batch = masked_candidates(x, 8, seed=1)
    out = check_batch_consistency(model.apply, model.params, batch, atol=1e-4)
    assert out.shape == (8, 2)
    assert np.ptp(out, axis=0).max() > 0  # candidates differ, so the check is not vacuous


def test_too_short_clip_is_a_clear_error():
    model = random_model("aasist", TINY, labels=("spoof", "bonafide"))
    shortest = 16 + 3**7  # 17 taps, seven pools of 3
    with pytest.raises(ValueError, match=f"at least {shortest} samples, got {shortest - 1}"):
        jax.eval_shape(model.apply, model.params, jnp.zeros((1, shortest - 1)))
    assert jax.eval_shape(model.apply, model.params, jnp.zeros((1, shortest))).shape == (1, 2)
