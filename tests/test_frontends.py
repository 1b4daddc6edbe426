"""Front ends in JAX against the transformers feature extractors (and librosa / NumPy references)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsuff.models.ast import ASTConfig, ast_features
from jsuff.models.base import ModelError
from jsuff.models.fbank import FbankConfig, kaldi_fbank
from jsuff.models.logmel import (
    LogMelConfig,
    frame_signal,
    hz_to_mel,
    mel_filter_bank,
    mel_to_hz,
    whisper_log_mel,
    window,
)
from tests.helpers.hf import waveforms

transformers = pytest.importorskip("transformers")
audio_utils = pytest.importorskip("transformers.audio_utils")

# The AST extractor (NumPy path: torchaudio is absent) and the reference Kaldi spectrogram run in
# float64; the port runs in float32. Typical log energies agree to ~1e-6. In bands holding ~1e-6
# of a frame's energy (a loud tone over faint noise, or low bands after pre-emphasis), rounding
# the windowed frame to float32 alone moves the log energy by up to ~1e-3: measured, doing any one
# of DC removal, pre-emphasis, windowing or the FFT in float32 and the rest in float64 already
# gives 4e-4 on these clips. torchaudio's own float32 fbank departs from the NumPy path in the
# same bands. AST divides by 2 * std (~9), so its inputs agree to ~2e-4 at worst.
LOG_ATOL = 2e-3
AST_ATOL = 3e-4
MEDIAN_ATOL = 1e-5
# Whisper's extractor runs torch.stft in float32 like the port: 1e-4 holds everywhere.
WHISPER_ATOL = 1e-4


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------

FILTERS = {
    "whisper-80": dict(args=(201, 80, 0.0, 8000.0, 16000), norm="slaney", mel_scale="slaney"),
    "whisper-128": dict(args=(201, 128, 0.0, 8000.0, 16000), norm="slaney", mel_scale="slaney"),
    "kaldi-16": dict(args=(257, 16, 20.0, 8000.0, 16000), mel_scale="kaldi", triangularize_in_mel_space=True),
    "htk-8k": dict(args=(129, 23, 50.0, 3800.0, 8000), mel_scale="htk"),
}


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_mel_filter_bank_matches_transformers(name):
    spec = dict(FILTERS[name])
    args = spec.pop("args")
    ours = mel_filter_bank(*args, **spec)
    ref = audio_utils.mel_filter_bank(*args, **spec)
    np.testing.assert_allclose(ours, ref, atol=1e-12, rtol=0)
    assert not ours.flags.writeable


@pytest.mark.parametrize("htk", [False, True])
def test_mel_filter_bank_matches_librosa(htk):
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(
        sr=16000, n_fft=400, n_mels=40, fmin=30.0, fmax=7000.0, htk=htk, dtype=np.float64
    )
    ours = mel_filter_bank(201, 40, 30.0, 7000.0, 16000, norm="slaney", mel_scale="htk" if htk else "slaney")
    np.testing.assert_allclose(ours.T, ref, atol=1e-10, rtol=1e-7)


@pytest.mark.parametrize("scale", ["htk", "slaney", "kaldi"])
def test_mel_scales_invert_and_match_transformers(scale):
    hz = np.array([0.0, 20.0, 700.0, 999.0, 1000.0, 1001.0, 4000.0, 8000.0])
    np.testing.assert_allclose(hz_to_mel(hz, scale), audio_utils.hertz_to_mel(hz.copy(), scale), rtol=1e-12)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz, scale), scale), hz, atol=1e-9)
    with pytest.raises(ModelError, match="unknown mel scale"):
        hz_to_mel(hz, "bark")


def test_windows():
    torch = pytest.importorskip("torch")
    periodic = torch.hann_window(400, dtype=torch.float64).numpy()
    np.testing.assert_allclose(window("hann", 400, periodic=True), periodic, atol=1e-15)
    np.testing.assert_allclose(window("hanning", 400, periodic=False), np.hanning(400), atol=1e-15)
    np.testing.assert_allclose(window("hamming", 400, periodic=False), np.hamming(400), atol=1e-15)
    np.testing.assert_allclose(window("povey", 400, periodic=False), np.hanning(400) ** 0.85, atol=1e-15)
    with pytest.raises(ModelError, match="unknown window"):
        window("kaiser", 4, periodic=False)


@pytest.mark.parametrize(("t", "length", "hop"), [(1000, 400, 160), (400, 400, 160), (399, 400, 160),
                                                  (50, 7, 3), (50, 4, 9), (17, 5, 5)])
def test_frame_signal_matches_indexing(t, length, hop):
    x = np.arange(2 * t, dtype=np.float32).reshape(2, t)
    n = max(0, 1 + (t - length) // hop) if t >= length else 0
    ref = x[:, hop * np.arange(n)[:, None] + np.arange(length)[None, :]]
    got = np.asarray(frame_signal(jnp.asarray(x), length, hop))
    assert got.shape == (2, n, length)
    np.testing.assert_array_equal(got, ref)


# ------------------------------------------------------------------------------------------------
# Kaldi fbank and AST's features
# ------------------------------------------------------------------------------------------------


def _reference_fbank(x: np.ndarray, cfg: FbankConfig, hf_window: str) -> np.ndarray:
    filters = audio_utils.mel_filter_bank(
        cfg.n_fft // 2 + 1, cfg.num_mel_bins, cfg.low_freq, cfg.sample_rate // 2, cfg.sample_rate,
        mel_scale="kaldi", triangularize_in_mel_space=True,
    )
    return audio_utils.spectrogram(
        x, audio_utils.window_function(cfg.frame_length, hf_window, periodic=False),
        frame_length=cfg.frame_length, hop_length=cfg.frame_shift, fft_length=cfg.n_fft, power=2.0,
        center=False, preemphasis=0.97, mel_filters=filters, log_mel="log", mel_floor=cfg.log_floor,
        remove_dc_offset=True,
    ).T


@pytest.mark.parametrize(
    ("window_type", "hf_window", "rate"),
    [("hanning", "hann", 16000), ("povey", "povey", 16000), ("hamming", "hamming", 16000),
     ("rectangular", "boxcar", 16000), ("hanning", "hann", 8000)],
)
def test_kaldi_fbank_matches_reference(window_type, hf_window, rate):
    cfg = FbankConfig(sample_rate=rate, num_mel_bins=24, window_type=window_type)
    clips = waveforms(2, 6000, seed=1)
    got = np.asarray(jax.jit(kaldi_fbank, static_argnums=1)(jnp.asarray(clips), cfg))
    for clip, ours in zip(clips, got, strict=True):
        ref = _reference_fbank(clip, cfg, hf_window)
        assert ours.shape == ref.shape == (cfg.num_frames(6000), 24)
        np.testing.assert_allclose(ours, ref, atol=LOG_ATOL, rtol=0)
        assert np.median(np.abs(ours - ref)) < MEDIAN_ATOL


def test_kaldi_fbank_jit_equals_eager_and_frame_counts():
    cfg = FbankConfig(num_mel_bins=16)
    x = jnp.asarray(waveforms(2, 1000))
    jitted = np.asarray(jax.jit(kaldi_fbank, static_argnums=1)(x, cfg))
    eager = np.asarray(kaldi_fbank(x, cfg))  # fusion changes float32 rounding: the same bound
    np.testing.assert_allclose(jitted, eager, atol=LOG_ATOL, rtol=0)
    assert np.median(np.abs(jitted - eager)) < MEDIAN_ATOL
    assert [cfg.num_frames(t) for t in (399, 400, 559, 560, 16000)] == [0, 1, 1, 2, 98]
    assert kaldi_fbank(jnp.zeros((3, 399)), cfg).shape == (3, 0, 16)
    with pytest.raises(ModelError, match="high_freq"):
        FbankConfig(low_freq=9000.0)


@pytest.mark.parametrize("length", [8000, 19200, 250])
def test_ast_features_match_extractor(length):
    fe = transformers.ASTFeatureExtractor(num_mel_bins=16, max_length=64, mean=-3.1, std=3.7)
    cfg = ASTConfig(num_mel_bins=16, max_length=64, mean=-3.1, std=3.7)
    clips = waveforms(3, length, seed=length)
    ref = fe(list(clips), sampling_rate=16000, return_tensors="np")["input_values"]
    got = np.asarray(jax.jit(ast_features, static_argnums=1)(jnp.asarray(clips), cfg))
    assert got.shape == ref.shape == (3, 64, 16)
    np.testing.assert_allclose(got, ref, atol=AST_ATOL, rtol=0)
    assert np.median(np.abs(got - ref)) < MEDIAN_ATOL


# transformers warns that one of the 128 Kaldi filters is empty at 16 kHz; the port floors that
# band exactly as the extractor does, which this test checks.
@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values:UserWarning")
@pytest.mark.parametrize("normalize", [True, False])
def test_ast_features_released_settings(normalize):
    fe = transformers.ASTFeatureExtractor(max_length=300, do_normalize=normalize)
    cfg = dataclasses.replace(ASTConfig(), max_length=300, do_normalize=normalize)
    clips = waveforms(2, 24000, seed=4)
    ref = fe(list(clips), sampling_rate=16000, return_tensors="np")["input_values"]
    got = np.asarray(jax.jit(ast_features, static_argnums=1)(jnp.asarray(clips), cfg))
    assert got.shape == ref.shape == (2, 300, 128)
    np.testing.assert_allclose(got, ref, atol=AST_ATOL if normalize else LOG_ATOL, rtol=0)
    assert np.median(np.abs(got - ref)) < MEDIAN_ATOL


# ------------------------------------------------------------------------------------------------
# Whisper log-mel
# ------------------------------------------------------------------------------------------------


def _whisper_clips(length: int) -> np.ndarray:
    clips = waveforms(3, length, seed=length)
    clips[1] *= 0.01  # another level: each clip is clamped at its own maximum
    clips[2, : length // 2] = 0.0  # digital silence: the max - 8 clamp is active
    return clips


@pytest.mark.parametrize(("n_mels", "length"), [(80, 8000), (80, 24000), (128, 16000)])
def test_whisper_log_mel_matches_extractor(n_mels, length):
    fe = transformers.WhisperFeatureExtractor(feature_size=n_mels, chunk_length=1)
    cfg = LogMelConfig(n_mels=n_mels, n_samples=fe.n_samples)
    clips = _whisper_clips(length)
    ref = fe(list(clips), sampling_rate=16000, return_tensors="np")["input_features"]
    got = np.asarray(jax.jit(whisper_log_mel, static_argnums=1)(jnp.asarray(clips), cfg))
    assert got.shape == ref.shape == (3, n_mels, 100)
    np.testing.assert_allclose(got, ref, atol=WHISPER_ATOL, rtol=0)
    assert np.any(got[2] == got[2].min())  # the clamp was exercised


def test_whisper_log_mel_30_seconds_and_eager():
    fe = transformers.WhisperFeatureExtractor()
    clips = waveforms(1, 16000 * 31, seed=9)  # longer than 30 s: trimmed
    ref = fe(list(clips), sampling_rate=16000, return_tensors="np")["input_features"]
    got = np.asarray(jax.jit(whisper_log_mel)(jnp.asarray(clips)))
    assert got.shape == ref.shape == (1, 80, 3000)
    np.testing.assert_allclose(got, ref, atol=WHISPER_ATOL, rtol=0)
    short = jnp.asarray(clips[:, :3000])
    cfg = LogMelConfig(n_samples=3200)
    eager = whisper_log_mel(short, cfg)
    jitted = jax.jit(whisper_log_mel, static_argnums=1)(short, cfg)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-5)
