"""Audio files in, float32 mono out; every bad input raises one AudioError naming the problem."""

import numpy as np
import pytest
import soundfile as sf

from jsuff.audio import AudioError, load_audio, resample, validate_waveform, write_wav

SR = 8000


def sine(freq: float = 440.0, seconds: float = 0.25, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(x))) * sr / len(x))


def test_wav_round_trip_is_exact(tmp_path):
    x = sine() * 3.0  # float WAV keeps samples beyond [-1, 1]
    path = write_wav(tmp_path / "a" / "x.wav", x, SR)
    y, sr = load_audio(path)
    assert sr == SR and y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y, x)


def test_integer_pcm_is_scaled_and_stereo_is_downmixed(tmp_path):
    left = np.full(100, 16384, np.int16)
    right = np.full(100, -8192, np.int16)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), SR, subtype="PCM_16")
    y, sr = load_audio(tmp_path / "s.wav")
    assert y.shape == (100,) and sr == SR
    np.testing.assert_allclose(y, (0.5 - 0.25) / 2)


@pytest.mark.parametrize(("ext", "fmt", "subtype", "exact"), [
    ("flac", "FLAC", "PCM_16", True),
    ("ogg", "OGG", "VORBIS", False),
    ("mp3", "MP3", "MPEG_LAYER_III", False),
])
def test_compressed_formats(tmp_path, ext, fmt, subtype, exact):
    x = sine(seconds=0.5, sr=16000)
    path = tmp_path / f"x.{ext}"
    sf.write(path, x, 16000, format=fmt, subtype=subtype)
    y, sr = load_audio(path)
    assert sr == 16000 and y.dtype == np.float32 and y.ndim == 1
    if exact:
        np.testing.assert_allclose(y, x, atol=1 / 32768)
    else:  # lossy codecs pad and smear, but the tone survives
        assert abs(len(y) - len(x)) < 4000
        assert abs(peak_hz(y, sr) - 440.0) < 10
        assert 0.5 < np.sqrt(np.mean(y**2)) / np.sqrt(np.mean(x**2)) < 1.5


def test_resampling_on_load_and_directly(tmp_path):
    write_wav(tmp_path / "x.wav", sine(seconds=0.5), SR)
    y, sr = load_audio(tmp_path / "x.wav", sample_rate=16000)
    assert sr == 16000 and y.shape == (8000,) and y.dtype == np.float32
    assert abs(peak_hz(y, 16000) - 440.0) < 4
    batch = resample(np.stack([sine(), sine(220.0)]), SR, 4000)
    assert batch.shape == (2, 1000) and batch.dtype == np.float32
    assert resample(sine(), SR, SR) is not None and resample(sine(), SR, SR).shape == sine().shape
    with pytest.raises(AudioError, match="positive"):
        resample(sine(), 0, SR)


def test_file_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(AudioError, match=r"missing\.wav: file not found"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(tmp_path)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav: file is empty"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(AudioError, match=r"junk\.wav: cannot decode"):
        load_audio(tmp_path / "junk.wav")
    sf.write(tmp_path / "zero.wav", np.zeros((0, 1), np.float32), SR)
    with pytest.raises(AudioError, match=r"zero\.wav: decodes to zero samples"):
        load_audio(tmp_path / "zero.wav")
    bad = sine()
    bad[10] = np.nan
    bad[20] = np.inf
    sf.write(tmp_path / "nan.wav", bad, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav contains non-finite values \(NaN and Inf; 2 of"):
        load_audio(tmp_path / "nan.wav")


def test_validate_waveform():
    assert validate_waveform([0.0, 0.5]).dtype == np.float32
    np.testing.assert_array_equal(validate_waveform(np.array([0, 128, 255], np.uint8)), [-1.0, 0.0, 127 / 128])
    np.testing.assert_array_equal(validate_waveform(np.array([2**30], np.int32)), [0.5])
    assert validate_waveform(np.ones((3, 4), np.float64)).shape == (3, 4)
    for bad, match in [
        (np.array([], np.float32), "zero-length"),
        (np.zeros((2, 0), np.float32), "zero-length"),
        (np.ones((2, 2, 2)), r"shape \(2, 2, 2\)"),
        (np.ones(3, complex), "dtype complex"),
        (np.ones(3, bool), "dtype bool"),
        (np.array([0.0, np.inf]), r"Inf; 1 of 2 samples, first at index 1"),
        (np.array([[0.0, 0.0], [np.nan, 0.0]]), r"first at index \(1, 0\)"),
    ]:
        with pytest.raises(AudioError, match=match):
            validate_waveform(bad, name="clip 3")
    with pytest.raises(AudioError, match="^clip 3"):
        validate_waveform(np.array([np.nan]), name="clip 3")


def test_write_wav_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(AudioError, match="non-finite"):
        write_wav(tmp_path / "x.wav", np.array([np.nan], np.float32), SR)
    with pytest.raises(AudioError, match="non-empty"):
        write_wav(tmp_path / "x.wav", np.zeros(0, np.float32), SR)
    assert not (tmp_path / "x.wav").exists()
