"""The mel-CNN family: parity with a PyTorch module written here from the documented key layout,
the front end against torch.stft and librosa, training with optax, converter errors, jit / vmap /
masked candidates."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import converters
import jsuff
from converters.common import ConversionError
from jsuff.models.base import ModelError, build_model
from jsuff.models.melcnn import MelCnnConfig, build, log_mel, mel_filterbank
from tests.helpers.families import check_batch_consistency, masked_candidates

torch = pytest.importorskip("torch")

CFG = {
    "num_classes": 3,
    "sample_rate": 16000,
    "n_fft": 256,
    "hop": 128,
    "n_mels": 24,
    "fmin": 50.0,
    "fmax": 7000.0,
    "channels": [4, 8, 6],
}


class TorchMelCnn(torch.nn.Module):
    """The documented PyTorch layout (jsuff/models/melcnn.py docstring), written independently."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        fb = mel_filterbank(cfg["sample_rate"], cfg["n_fft"], cfg["n_mels"], cfg["fmin"], cfg["fmax"])
        self.register_buffer("fb", torch.from_numpy(np.array(fb)), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg["n_fft"]), persistent=False)
        chans = [1, *cfg["channels"]]
        self.blocks = torch.nn.ModuleList()
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            block = torch.nn.Module()
            block.conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1)
            block.bn = torch.nn.BatchNorm2d(c_out)
            self.blocks.append(block)
        self.head = torch.nn.Linear(chans[-1], cfg["num_classes"])

    def log_mel(self, x):
        spec = torch.stft(
            x, self.cfg["n_fft"], hop_length=self.cfg["hop"], window=self.window, center=True,
            pad_mode="reflect", return_complex=True,
        )
        mel = torch.matmul(self.fb.T, spec.abs() ** 2)  # [B, n_mels, frames]
        return torch.log(mel + self.cfg.get("log_eps", 1e-6))

    def forward(self, x):
        h = self.log_mel(x)[:, None]
        for block in self.blocks:
            h = torch.nn.functional.max_pool2d(torch.relu(block.bn(block.conv(h))), 2)
        h = h.amax(dim=(2, 3)) if self.cfg.get("pooling") == "max" else h.mean(dim=(2, 3))
        return self.head(h)


def _torch_model(cfg: dict, seed: int = 0) -> TorchMelCnn:
    torch.manual_seed(seed)
    net = TorchMelCnn(cfg)
    with torch.no_grad():  # realistic, non-trivial batch-norm statistics and affine parameters
        for block in net.blocks:
            block.bn.running_mean.uniform_(-1.0, 1.0)
            block.bn.running_var.uniform_(0.5, 2.0)
            block.bn.weight.uniform_(0.5, 1.5)
            block.bn.bias.uniform_(-0.5, 0.5)
    return net.eval()


def _clips(n: int = 4, t: int = 8000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tone = np.sin(2 * np.pi * rng.uniform(200, 3000, (n, 1)) * np.arange(t) / 16000)
    return (0.3 * tone + 0.05 * rng.standard_normal((n, t))).astype(np.float32)


def test_mel_filterbank_matches_an_independent_htk_filterbank():
    # transformers' NumPy implementation (librosa's equivalent costs a long numba warm-up).
    audio_utils = pytest.importorskip("transformers.audio_utils")
    ours = mel_filterbank(16000, 512, 40, 30.0, 7600.0)
    ref = audio_utils.mel_filter_bank(257, 40, 30.0, 7600.0, 16000, norm=None, mel_scale="htk")
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_log_mel_matches_torch_stft():
    cfg = MelCnnConfig.from_mapping(CFG)
    x = _clips()
    want = _torch_model(CFG).log_mel(torch.from_numpy(x)).detach().numpy()
    got = np.asarray(jax.jit(lambda x: log_mel(x, cfg))(x))
    assert got.shape == (4, 1 + 8000 // 128, 24)
    np.testing.assert_allclose(got, want.transpose(0, 2, 1), atol=1e-4, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_converted_matches_torch(tmp_path, pooling):
    cfg = dict(CFG, pooling=pooling)
    net = _torch_model(cfg, seed=1)
    torch.save(net.state_dict(), tmp_path / "cnn.pth")
    (tmp_path / "cnn.json").write_text(json.dumps({**cfg, "labels": ["a", "b", "c"], "num_samples": 8000}))
    converters.convert(tmp_path / "cnn.pth", tmp_path / "out", arch="melcnn", config=tmp_path / "cnn.json")
    model = jsuff.load_model(tmp_path / "out")
    assert model.labels == ("a", "b", "c") and model.input.length == 8000

    x = _clips(seed=2)
    want = net(torch.from_numpy(x)).detach().numpy()
    got = np.asarray(model(x))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


def test_converter_errors(tmp_path):
    sd = _torch_model(CFG).state_dict()
    sd.pop("blocks.1.bn.running_var")
    sd["blocks.2.conv.weight"] = torch.zeros(6, 4, 3, 3)
    sd["classifier.weight"] = torch.zeros(3, 6)
    torch.save(sd, tmp_path / "bad.pth")
    (tmp_path / "cnn.json").write_text(json.dumps(CFG))
    with pytest.raises(ConversionError) as e:
        converters.convert(tmp_path / "bad.pth", tmp_path / "out", arch="melcnn", config=tmp_path / "cnn.json")
    msg = str(e.value)
    assert "blocks/1/bn/var" in msg and "classifier.weight" in msg
    assert "blocks.2.conv.weight -> blocks/2/conv/kernel: got (3, 3, 4, 6), expected (3, 3, 8, 6)" in msg
    (tmp_path / "labels.json").write_text(json.dumps({**CFG, "labels": ["a", "b"]}))
    with pytest.raises(ConversionError, match="2 labels for num_classes=3"):
        converters.convert(tmp_path / "bad.pth", None, arch="melcnn", config=tmp_path / "labels.json")
    with pytest.raises(ModelError, match="pooling must be one of"):
        MelCnnConfig.from_mapping({**CFG, "pooling": "attention"})
    with pytest.raises(ModelError, match="fmin < fmax"):
        MelCnnConfig.from_mapping({**CFG, "fmax": 9000.0})


def test_trains_with_optax_and_batch_norm_modes():
    # Two classes, tone vs noise: a few Adam steps must lower the loss; train mode updates the
    # running statistics, eval mode uses them and is deterministic.
    cfg = {"num_classes": 2, "n_fft": 256, "hop": 128, "n_mels": 16, "channels": [4, 8]}
    model = build(cfg, nnx.Rngs(0))
    model.train()
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    rng = np.random.default_rng(0)
    x = np.concatenate([_clips(8, 4000, seed=5), 0.3 * rng.standard_normal((8, 4000)).astype(np.float32)])
    y = jnp.asarray([0] * 8 + [1] * 8)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    mean0 = np.array(model.blocks[0].bn.mean[...])
    # optax's Adam raises its decay rates to an int32 step count: not allowed by the strict dtype
    # promotion this test suite runs under, so training runs with JAX's standard promotion.
    with jax.numpy_dtype_promotion("standard"):
        losses = [float(step(model, optimizer, jnp.asarray(x), y)) for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0], losses
    assert not np.allclose(model.blocks[0].bn.mean[...], mean0)
    model.eval()
    predict = nnx.jit(lambda model, x: model(x))
    a = predict(model, jnp.asarray(x))
    b = predict(model, jnp.asarray(np.concatenate([x[:3], np.zeros_like(x[3:])])))
    np.testing.assert_allclose(a[:3], b[:3], atol=1e-5)  # running stats: no dependence on the batch
    assert float((a.argmax(-1) == y).mean()) >= 0.9


def test_batches_jit_vmap_and_masked_candidates():
    cfg = MelCnnConfig.from_mapping({**CFG, "num_samples": 6000})
    model = build_model("melcnn", cfg.to_json(), sample_rate=16000, labels="xyz", input=cfg.input_policy())
    x = model.prepare(_clips(1, 5000)[0])  # zero-padded to 6000
    assert x.shape == (6000,) and not x[5000:].any()
    batch = masked_candidates(x, 8, seed=4)
    out = check_batch_consistency(model.apply, model.params, batch, atol=1e-5)
    assert out.shape == (8, 3) and np.ptp(out, axis=0).max() > 0
    np.testing.assert_allclose(model.apply(model.params, jnp.asarray(batch[:2])), out[:2], atol=1e-5)  # eager
