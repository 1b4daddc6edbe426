"""silero_vad port vs the silero-vad package's own TorchScript model (skips when not installed)."""

import importlib.util
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers.real_packages import check_jit_eager_vmap, clips, require

require("silero_vad", "silero-vad")

import torch  # noqa: E402

from converters import ConversionError, convert  # noqa: E402
from converters.silero import _SAFETENSORS_NAMES  # noqa: E402
from jsuff.models import load_model  # noqa: E402
from jsuff.models._detectors import frames_fn  # noqa: E402
from jsuff.models.silero import SileroConfig, timestamps_found  # noqa: E402

DATA = Path(importlib.util.find_spec("silero_vad").submodule_search_locations[0]) / "data"


@pytest.fixture(scope="module")
def silero():
    import silero_vad  # imports without torchaudio (its audio I/O is lazy)

    return silero_vad


@pytest.fixture(scope="module")
def model():
    return convert("pkg:silero-vad", None)


@pytest.fixture(scope="module")
def audio():
    # 0.75 s: 23.4 chunks, so the last chunk is zero-padded as in the package.
    return clips(0.75)


@pytest.fixture(scope="module")
def frames(model):
    return jax.jit(frames_fn(model))  # one compilation, shared by both weight sets


def _package_model(weights: str = "jit"):
    jm = torch.jit.load(str(DATA / "silero_vad.jit"))
    if weights == "safetensors":
        from safetensors.torch import load_file

        sd = {_SAFETENSORS_NAMES[k]: v for k, v in load_file(str(DATA / "silero_vad_16k.safetensors")).items()}
        jm._model.load_state_dict(sd)  # the package's own network, with the safetensors values
    jm.eval()
    return jm


@pytest.mark.parametrize("weights", ["jit", "safetensors"])
def test_chunk_probabilities_match_package(weights, frames, audio):
    m = convert(f"pkg:silero-vad/{weights}", None)
    ours = np.asarray(frames(m.params, jnp.asarray(audio)))
    with torch.no_grad():
        ref = _package_model(weights).audio_forward(torch.from_numpy(audio), 16000).numpy()
    assert ours.shape == ref.shape == (3, 24)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    assert m.source["weights"] == weights


def test_clip_decision_matches_get_speech_timestamps(silero, model):
    jm = _package_model()
    x = clips(2.75)
    x[2, :8000] = 0.0  # silence, then speech-like syllables
    expected = [len(silero.get_speech_timestamps(torch.from_numpy(xi.copy()), jm)) > 0 for xi in x]
    logits = np.asarray(model(x))
    assert logits.shape == (3, 2)
    assert (logits.argmax(-1) == 1).tolist() == expected
    assert expected[2], "the speech-like clip should count as speech"


def test_timestamp_rule_replays_package_state_machine(silero):
    # Random probability tracks with long runs on either side of both thresholds.
    rng = np.random.default_rng(1)
    n, t = 48, 40
    levels = np.array([0.05, 0.3, 0.4, 0.7, 0.95], np.float32)
    runs = rng.integers(1, 12, size=(n, t))
    probs = np.stack([np.repeat(rng.choice(levels, t), r)[:t] for r in runs]).astype(np.float32)
    found = np.asarray(timestamps_found(jnp.asarray(probs), t * 512 - 100, SileroConfig()))
    expected = [
        len(silero.get_speech_timestamps_from_probs(p.tolist(), audio_length_samples=t * 512 - 100)) > 0 for p in probs
    ]
    assert found.tolist() == expected
    assert 5 < sum(expected) < n - 5  # both outcomes are exercised


def test_jit_eager_vmap(model):
    # 4 chunks: eager execution is slow and the property does not need a longer clip.
    check_jit_eager_vmap(model, clips(0.1), atol=1e-6)


def test_cli_convert_round_trip(tmp_path, model):
    from flax import nnx

    from jsuff.app.cli import main
    from jsuff.models.base import flatten

    assert main(["convert", "pkg:silero-vad", "--out", str(tmp_path / "silero")]) == 0
    loaded = load_model(tmp_path / "silero")
    assert loaded.labels == ("no_speech", "speech") and loaded.source["package"] == "silero-vad"
    ours, theirs = (flatten(nnx.to_pure_dict(m.params)) for m in (model, loaded))
    assert ours.keys() == theirs.keys()
    for k in ours:
        np.testing.assert_array_equal(ours[k], theirs[k])


def test_bad_sources(tmp_path):
    with pytest.raises(ConversionError, match="jit, safetensors"):
        convert("pkg:silero-vad/8k", None)
    bad = tmp_path / "silero_vad_bad.jit"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConversionError, match="silero_vad_bad.jit"):
        convert(bad, None)


def test_jit_is_read_as_data_like_torch_jit_load(tmp_path, model):
    from flax import nnx

    from converters._torchscript import read_torchscript
    from jsuff.models.base import flatten

    ours = read_torchscript(DATA / "silero_vad.jit")
    theirs = torch.jit.load(str(DATA / "silero_vad.jit")).state_dict()  # the package's own file
    assert list(ours) == list(theirs)
    for k, v in theirs.items():
        np.testing.assert_array_equal(ours[k], v.numpy(), err_msg=k)
    # a user's copy converts like the shipped file, without being executed
    copy = tmp_path / "silero_vad_copy.jit"
    shutil.copyfile(DATA / "silero_vad.jit", copy)
    converted = convert(copy, None)
    a, b = (flatten(nnx.to_pure_dict(m.params)) for m in (model, converted))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
