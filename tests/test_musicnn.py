"""musicnn / musicnn_vgg: front end, patches and pooling, the converter, parity with the package.

The front end is checked against librosa (which the package calls) without the package; the
converted models need ``musicnn`` installed (``make setup-real``); the parity tests also need
``../shared/golden/musicnn`` (the package's own TensorFlow outputs). Each skips with its reason.
The package's Python code is never imported (it imports TensorFlow).
"""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
from tests.helpers.real_packages import check_jit_eager_vmap
from tests.helpers.families import check_batch_consistency, masked_candidates, random_model

from converters import ConversionError, convert, supported
from converters.musicnn import convert_folder, read_tag_lists
from converters.tf_bundle import BundleError
from jsuff.models import ModelError, load_model
from jsuff.models.musicnn import (
    MIN_SAMPLES,
    PATCH_FRAMES,
    compress,
    headroom,
    log_compression_table,
    log_mel,
    mel_energies,
    num_patches,
    patch_logits_fn,
    patches,
    pool_patch_logits,
    tf_relu,
)

SR = 16000
NAMES = ("MTT_musicnn", "MTT_vgg", "MSD_musicnn", "MSD_vgg")
ARCH = {"MTT_musicnn": "musicnn", "MSD_musicnn": "musicnn", "MTT_vgg": "musicnn_vgg", "MSD_vgg": "musicnn_vgg"}


def music_like(seconds: float, seed: int = 0, peak: float = 0.05) -> np.ndarray:
    """Decaying harmonic notes over noise, quiet enough that no mel energy overflows float16."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.02 * rng.standard_normal(t.size)
    for start in np.arange(0.0, seconds, 0.4):
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
        env = np.where(t >= start, np.exp(-(t - start) * 4), 0.0)
        x += env * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    return (peak * x / np.abs(x).max()).astype(np.float32)


def librosa_mel(x: np.ndarray) -> np.ndarray:
    """``batch_data``'s ``librosa.feature.melspectrogram`` call, ``[F, 96]``."""
    return librosa.feature.melspectrogram(y=x, sr=SR, hop_length=256, n_fft=512, n_mels=96).T


def package_patches(audio_rep: np.ndarray) -> np.ndarray:
    """The patches ``batch_data`` cuts (``input_overlap=False``: hop = 187 frames), ``[P, 187, 96]``."""
    starts = range(0, audio_rep.shape[0] - PATCH_FRAMES + 1, PATCH_FRAMES)
    return np.stack([audio_rep[s : s + PATCH_FRAMES] for s in starts]) if starts else np.zeros((0, PATCH_FRAMES, 96))


def package_compress(energies: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        rep = energies.astype(np.float16)
        return np.log10(10000 * rep + 1).astype(np.float32)  # batch_data's expression


def f16_bits(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).astype(np.float16).view(np.uint16).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Front end, patches, pooling (no package needed)
# ----------------------------------------------------------------------------------------------


def test_compression_table_is_the_package_expression():
    table = log_compression_table()
    h = np.random.default_rng(0).uniform(0, 8, 20000).astype(np.float32)
    h = np.concatenate([h, [0.0, 6e-8, 6.5, 6.55, 6.56, 1e4, np.inf]]).astype(np.float32)
    ours = np.asarray(compress(jnp.asarray(h)))
    np.testing.assert_array_equal(ours, package_compress(h))
    assert np.isinf(ours[h >= 6.56]).all() and np.isfinite(ours[h <= 6.5]).all()
    assert np.isnan(np.asarray(compress(jnp.array([np.nan, -1.0])))).all()
    assert (np.diff(table[np.isfinite(table)]) >= 0).all()


def test_headroom_is_the_gain_at_which_float16_overflows():
    x = np.stack([music_like(1.0, seed=9, peak=0.9), music_like(1.0, seed=10, peak=0.01)])
    g = np.asarray(headroom(jnp.asarray(x)))
    assert g[0] < 1 < g[1]  # the loud clip overflows as it is, the quiet one does not
    for factor, overflows in ((0.99, False), (1.01, True)):
        mel = np.asarray(log_mel(jnp.asarray(x * (factor * g[:, None]).astype(np.float32))))
        assert [bool(np.isinf(m).any()) for m in mel] == [overflows, overflows]


def test_mel_energies_match_librosa():
    clips = np.stack([music_like(1.3, seed=s, peak=p) for s, p in ((0, 0.05), (1, 0.5), (2, 0.9))])
    ours = np.asarray(mel_energies(jnp.asarray(clips)))
    ref = np.stack([librosa_mel(x) for x in clips])
    assert ours.shape == ref.shape == (3, 1 + clips.shape[1] // 256, 96)
    scale = ref.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * float(scale.max()))
    # After the float16 cast, at most a few values land on the neighbouring step, never further.
    steps = np.abs(f16_bits(ours) - f16_bits(ref))
    assert steps.max() <= 1 and steps.mean() < 2e-3


def test_log_mel_and_patches_as_the_package_cuts_them():
    for seconds, expected in ((3.0, 1), (6.0, 2), (10.0, 3)):
        x = music_like(seconds, seed=3)
        ours = np.asarray(patches(jnp.asarray(x[None])))[0]
        ref = package_patches(package_compress(librosa_mel(x)))
        assert ours.shape == ref.shape == (expected, PATCH_FRAMES, 96)
        mel = np.asarray(log_mel(jnp.asarray(x[None])))[0]
        np.testing.assert_array_equal(ours, mel[: expected * PATCH_FRAMES].reshape(ours.shape))
        assert np.mean(ours != ref) < 2e-3  # the rare float16 step, as above


def test_patch_counts_around_the_boundaries():
    for n in (MIN_SAMPLES - 1, MIN_SAMPLES, 48000, 2 * 187 * 256 - 1, 2 * 187 * 256, 160000):
        frames = librosa.feature.melspectrogram(y=np.zeros(n, np.float32), sr=SR, hop_length=256, n_fft=512).shape[1]
        assert num_patches(n) == len(range(0, frames - PATCH_FRAMES + 1, PATCH_FRAMES)), n
    assert num_patches(MIN_SAMPLES - 1) == 0 and num_patches(MIN_SAMPLES) == 1


def test_pooling_is_the_logit_of_the_mean_probability():
    z = np.random.default_rng(0).normal(0, 4, (3, 5, 50)).astype(np.float32)
    z[0, :, 0] = [60.0, 80.0, 90.0, 100.0, 70.0]  # saturated sigmoids: finite, not rounded to 1
    z[1, :, 0] = -90.0
    pooled = np.asarray(pool_patch_logits(jnp.asarray(z)))
    z64 = z.astype(np.float64)
    p = np.mean(1 / (1 + np.exp(-z64)), axis=1)  # mean tag probability
    q = np.mean(1 / (1 + np.exp(z64)), axis=1)  # 1 - p without cancellation
    np.testing.assert_allclose(pooled, np.log(p) - np.log(q), rtol=1e-5, atol=1e-5)
    assert np.isfinite(pooled).all()
    np.testing.assert_allclose(pooled[:2, 0], [60 + np.log(5), -90], rtol=1e-6)  # -log mean e^-z; all equal
    assert (pooled.argmax(-1) == p.argmax(-1)).all()  # the package's top tag (mean taggram)
    one = z[:, :1]
    np.testing.assert_array_equal(np.asarray(pool_patch_logits(jnp.asarray(one))), one[:, 0])


def test_tf_relu_drops_nan():
    x = jnp.array([np.nan, -np.inf, -1.0, 0.0, 2.0, np.inf])
    assert np.asarray(tf_relu(x)).tolist() == [0.0, 0.0, 0.0, 0.0, 2.0, np.inf]


@pytest.fixture(scope="module")
def random_taggers():
    return {arch: random_model(arch, {"num_classes": 4}, labels="abcd") for arch in ("musicnn", "musicnn_vgg")}


def test_short_clips_are_refused(random_taggers):
    m = random_taggers["musicnn"]
    with pytest.raises(ModelError, match=f"at least {MIN_SAMPLES} samples"):
        m(np.zeros((1, MIN_SAMPLES - 1), np.float32))
    assert m(np.zeros((1, MIN_SAMPLES), np.float32)).shape == (1, 4)


@pytest.mark.parametrize("arch", ["musicnn", "musicnn_vgg"])
def test_long_clip_pools_its_patches(random_taggers, arch):
    m = random_taggers[arch]
    x = music_like(7.0, seed=4)[None]  # 438 frames: 2 whole patches, the rest dropped
    per_patch = np.asarray(jax.jit(patch_logits_fn(m))(m.params, patches(jnp.asarray(x))[0]))
    assert per_patch.shape == (2, 4)
    np.testing.assert_allclose(np.asarray(m(x)), np.asarray(pool_patch_logits(jnp.asarray(per_patch[None]))), atol=1e-5)
    # A 3 s clip's logits are its one patch's logits, and the first patch of the long clip is the
    # same audio as the first 3 s.
    np.testing.assert_allclose(np.asarray(m(x[:, :48000]))[0], per_patch[0], atol=1e-5)


def test_batch_consistency_on_masked_candidates(random_taggers):
    cands = masked_candidates(music_like(3.0, seed=5), 3)
    for m in random_taggers.values():
        check_batch_consistency(m.apply, m.params, cands, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Converted models (the package's data files)
# ----------------------------------------------------------------------------------------------


def _package_dir() -> Path:
    spec = importlib.util.find_spec("musicnn")
    if spec is None:
        pytest.skip("musicnn is not installed; `make setup-real` installs it (pip install --no-deps musicnn==0.1.0)")
    return Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="module")
def converted():
    _package_dir()
    return {name: convert(f"pkg:musicnn/{name}", None) for name in NAMES}


def test_tag_lists_are_read_as_data(tmp_path):
    tags = read_tag_lists(_package_dir() / "configuration.py")
    assert len(tags["MTT"]) == len(tags["MSD"]) == 50
    assert tags["MTT"][:3] == ("guitar", "classical", "slow") and tags["MSD"][:2] == ("rock", "pop")
    hostile = tmp_path / "configuration.py"
    hostile.write_text(f"MTT_LABELS = __import__('os').system('touch {tmp_path}/ran')\nMSD_LABELS = ['a']\n")
    with pytest.raises(ConversionError, match="MTT_LABELS is not a literal list"):
        read_tag_lists(hostile)
    assert not (tmp_path / "ran").exists()
    hostile.write_text("MTT_LABELS = ['a', 2]\nMSD_LABELS = ['b']\n")
    with pytest.raises(ConversionError, match="no list of tag strings MTT_LABELS"):
        read_tag_lists(hostile)


def test_converted_models(converted):
    for name, m in converted.items():
        assert m.arch == ARCH[name] and m.num_classes == 50 and m.sample_rate == SR
        assert m.source["variant"] == name and m.source["version"] == "0.1.0"
        assert {f["path"] for f in m.source["files"]} == {".index", ".data-00000-of-00001"}
    assert converted["MTT_vgg"].labels == converted["MTT_musicnn"].labels != converted["MSD_vgg"].labels


def test_detection_and_source_errors():
    _package_dir()
    convs = supported()
    for src, arch in [("pkg:musicnn", "musicnn"), ("pkg:musicnn/MSD_musicnn", "musicnn"),
                      ("pkg:musicnn/MTT_vgg", "musicnn_vgg"), ("pkg:musicnn/nope", "musicnn")]:
        assert [n for n, c in convs.items() if c.detect is not None and c.detect(src)] == [arch], src
    with pytest.raises(ConversionError, match="unknown variant in 'pkg:musicnn/nope'; one of: MTT_musicnn"):
        convert("pkg:musicnn/nope", None)
    with pytest.raises(ConversionError, match="is a musicnn_vgg model, not musicnn"):
        convert("pkg:musicnn/MSD_vgg", None, arch="musicnn")


def test_save_load_round_trip(converted, tmp_path):
    dest = tmp_path / "mtt_vgg"
    saved = convert("pkg:musicnn/MTT_vgg", dest)
    loaded = load_model(dest)
    x = music_like(3.0, seed=6)[None]
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(saved(x)))
    assert loaded.labels == converted["MTT_vgg"].labels


def test_truncated_checkpoint_is_an_error(tmp_path):
    src = _package_dir() / "MTT_vgg"
    (tmp_path / ".index").write_bytes((src / ".index").read_bytes())
    data = (src / ".data-00000-of-00001").read_bytes()
    (tmp_path / ".data-00000-of-00001").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="truncated"):
        convert_folder(tmp_path, arch="musicnn_vgg", labels=tuple("x" * 50), dest=None)
    with pytest.raises(ConversionError, match="missing .*timbral/0/kernel"):
        convert_folder(src, arch="musicnn", labels=tuple("x" * 50), dest=None)


def test_jit_eager_vmap(converted):
    x = np.stack([music_like(3.0, seed=7), music_like(3.0, seed=8)])
    check_jit_eager_vmap(converted["MTT_vgg"], x, atol=1e-4)  # the VGG: fewer ops to compile eagerly


# ----------------------------------------------------------------------------------------------
# Parity with the package's own TensorFlow outputs
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def golden(golden_dir):
    path = golden_dir / "musicnn" / "golden_outputs.npz"
    if not path.is_file():
        pytest.skip(f"golden reference data not found at {path}")
    return dict(np.load(path))


@pytest.mark.golden
@pytest.mark.parametrize("name", NAMES)
def test_network_parity_from_the_package_mel(converted, golden, name):
    # The package's own log-mel patches in, so no float16 step can differ: the networks alone.
    ours = np.asarray(jax.jit(patch_logits_fn(converted[name]))(converted[name].params, golden["mel_input"]))
    ref = golden[f"logits_{name}"]
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    assert (ours.argmax(-1) == ref.argmax(-1)).all()
    assert list(converted[name].labels) == golden[f"labels_{name}"].tolist()


@pytest.mark.golden
def test_front_end_parity(golden):
    ours = np.asarray(log_mel(jnp.asarray(golden["waveforms"])))[:, :PATCH_FRAMES]
    ref = golden["mel_input"]
    assert ours.shape == ref.shape
    assert (np.isinf(ours) == np.isinf(ref)).all()  # float16 overflow: the same cells (308 in the chirp)
    differ = ours != ref
    assert differ.sum(axis=(1, 2)).max() <= 10  # measured: 1-7 of 17,952 per clip
    # Where they differ, our energy sits one float16 step from one that gives the package's value.
    energies = np.asarray(mel_energies(jnp.asarray(golden["waveforms"])))[:, :PATCH_FRAMES]
    bits = f16_bits(energies)[differ]
    table = log_compression_table()
    assert all(ref[differ][i] in (table[b - 1], table[b + 1]) for i, b in enumerate(bits))


@pytest.mark.golden
@pytest.mark.parametrize("name", NAMES)
def test_end_to_end_parity(converted, golden, name):
    ours = np.asarray(converted[name](golden["waveforms"]))
    ref = golden[f"logits_{name}"]
    # 1-7 log-mel values per clip sit one float16 step away from the package's (test above);
    # measured effect on the logits: at most 1.6e-4 (MTT_vgg), under 1e-4 for the other models.
    np.testing.assert_allclose(ours, ref, atol=5e-4, rtol=0)
    assert (ours.argmax(-1) == ref.argmax(-1)).all()
