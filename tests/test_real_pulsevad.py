"""pulsevad port vs the pulsevad package's own models and NumPy front end (skips when not installed).

``import pulsevad`` imports torchaudio (its ``frontend.py``), which cannot be imported here, so the
reference is the package's own ``utils_vad``, ``frontend_np``, ``quantize`` (``FoldedPulseVAD``)
and ``model`` (``PulseVAD``) modules loaded from their files without running its ``__init__``.
"""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers.real_packages import check_jit_eager_vmap, clips, load_isolated, require

require("pulsevad", "pulsevad")

import torch  # noqa: E402

from converters import ConversionError, convert  # noqa: E402
from jsuff.models._detectors import frames_fn, mel_filters  # noqa: E402

DATA = Path(importlib.util.find_spec("pulsevad").submodule_search_locations[0]) / "data"


@pytest.fixture(scope="module")
def pulsevad():
    # utils_vad imports frontend_np inside predict_window, so the stand-in package stays loaded.
    with load_isolated("pulsevad", "frontend_np", "utils_vad", "quantize", "model") as pkg:
        yield pkg


def _reference(pulsevad, variant):
    if variant == "2.1k":
        ck = torch.load(DATA / "pulsevad_2.1k.pth", weights_only=True)
        net = pulsevad.quantize.FoldedPulseVAD(ck["dims"])
    else:
        ck = torch.load(DATA / "pulsevad_teacher_81k.pth", weights_only=True)
        net = pulsevad.model.PulseVAD()
    net.load_state_dict(ck["state_dict"])
    return net.eval()


@pytest.fixture(scope="module")
def model():
    return convert("pkg:pulsevad", None)


@pytest.mark.parametrize("variant", ["2.1k", "teacher"])
def test_window_probabilities_match_predict_window(pulsevad, variant):
    m = convert(f"pkg:pulsevad/{variant}", None)
    x = clips(1.0)
    ours = np.asarray(jax.jit(frames_fn(m))(m.params, jnp.asarray(x)))
    net = _reference(pulsevad, variant)
    starts = range(0, 16000 - 3200 + 1, 1600)
    ref = [[pulsevad.utils_vad.predict_window(net, xi[s : s + 3200]) for s in starts] for xi in x]
    assert ours.shape == (3, 9)
    np.testing.assert_allclose(ours, np.array(ref), atol=1e-4, rtol=0)


def test_short_clip_is_zero_padded_like_the_package(pulsevad, model):
    x = clips(0.125)[2:]  # 2000 samples: shorter than one window
    ours = np.asarray(jax.jit(frames_fn(model))(model.params, jnp.asarray(x)))
    ref = pulsevad.utils_vad.predict_window(_reference(pulsevad, "2.1k"), np.pad(x[0], (0, 1200)))
    assert ours.shape == (1, 1)
    np.testing.assert_allclose(ours[0, 0], ref, atol=1e-4)


def test_clip_decision_matches_get_speech_timestamps(pulsevad, model):
    x = clips(1.0)
    net = _reference(pulsevad, "2.1k")
    expected = [len(pulsevad.utils_vad.get_speech_timestamps(xi, net)) > 0 for xi in x]
    assert (np.asarray(model(x)).argmax(-1) == 1).tolist() == expected
    assert expected == [False, False, True]  # tone and noise are not speech, the speech-like clip is


def test_mel_filters_match_package_asset():
    ours = mel_filters(512, 64, 16000, 0.0, 8000.0, scale="htk")
    np.testing.assert_allclose(ours, np.load(DATA / "mel_filterbank.npy"), atol=1e-7)


def test_jit_eager_vmap(model):
    check_jit_eager_vmap(model, clips(0.3), atol=1e-6)


def test_bad_checkpoint(tmp_path):
    bad = tmp_path / "pulsevad_other.pth"
    torch.save({"state_dict": {"adapter.bn.running_var": torch.ones(3)}}, bad)
    with pytest.raises(ConversionError, match="no tensor"):
        convert(bad, None)
