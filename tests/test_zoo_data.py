"""The generated dataset: deterministic, balanced, disjoint splits, each class's cue present."""

import csv

import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d
from sklearn.metrics import roc_auc_score

from jsuff.app.zoo.data import (
    CLASS_NAMES,
    DatasetError,
    make_clip,
    make_dataset,
    read_dataset,
    write_dataset,
)


@pytest.fixture(scope="module")
def ds():
    return make_dataset(seed=0, n_per_class=(40, 0, 20))


def test_deterministic_and_seeded():
    a = make_dataset(seed=5, n_per_class=(2, 1, 1))
    b = make_dataset(seed=5, n_per_class=(2, 1, 1))
    c = make_dataset(seed=6, n_per_class=(2, 1, 1))
    np.testing.assert_array_equal(a.waveforms, b.waveforms)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.allclose(a.waveforms, c.waveforms)


def test_a_clip_does_not_depend_on_how_many_are_made():
    small = make_dataset(seed=2, n_per_class=(1, 1, 0))
    large = make_dataset(seed=2, n_per_class=(3, 2, 1))
    for split in ("train", "val"):
        s, big = small.subset(split), large.subset(split)
        np.testing.assert_array_equal(s.waveforms, big.waveforms[: len(s)])


def test_shapes_balance_and_levels(ds):
    assert ds.waveforms.shape == (300, 16000) and ds.waveforms.dtype == np.float32
    assert ds.labels.dtype == np.int32 and ds.class_names == CLASS_NAMES
    for split, n in (("train", 40), ("val", 0), ("test", 20)):
        np.testing.assert_array_equal(np.bincount(ds.subset(split).labels, minlength=5), [n] * 5)
    assert np.isfinite(ds.waveforms).all() and np.abs(ds.waveforms).max() <= 0.99
    rms_db = 10 * np.log10(np.mean(ds.waveforms.astype(np.float64) ** 2, axis=1))
    assert rms_db.max() <= -14 + 1e-3 and rms_db.min() >= -45  # peak limiting can only lower it
    assert rms_db.std() > 3  # the random gain is there


def test_splits_are_disjoint():
    d = make_dataset(seed=0, n_per_class=(6, 3, 3))
    digests = [hash(w.tobytes()) for w in d.waveforms]
    assert len(set(digests)) == len(d)
    assert len(d.subset("train")) + len(d.subset("val")) + len(d.subset("test")) == len(d)


def test_make_clip_by_name_or_index_and_errors():
    a = make_clip("low", np.random.default_rng(3), sample_rate=22050, duration=0.5)
    b = make_clip(2, np.random.default_rng(3), sample_rate=22050, duration=0.5)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (11025,)
    with pytest.raises(DatasetError, match="unknown class 'jazz'"):
        make_clip("jazz", np.random.default_rng(0))
    with pytest.raises(DatasetError, match="out of range"):
        make_clip(5, np.random.default_rng(0))
    with pytest.raises(DatasetError, match="n_per_class"):
        make_dataset(n_per_class=(0, 1, 1))
    with pytest.raises(DatasetError, match="unknown split"):
        make_dataset(n_per_class=(1, 0, 0)).subset("dev")


def _cue_features(x: np.ndarray, sr: int) -> dict[str, np.ndarray]:
    """One hand-made feature per class, each reading only that class's planted evidence."""
    x = x.astype(np.float64)
    t = x.shape[1]
    power = np.abs(np.fft.rfft(x * np.hanning(t), axis=1)) ** 2
    f = np.fft.rfftfreq(t, 1 / sr)
    floor = np.exp(uniform_filter1d(np.log(power + 1e-30), 31, axis=1))  # local geometric mean
    tonal = np.where(power > 10 * floor, power, 0.0)  # spectral peaks well above the local floor
    smooth = np.minimum(power, 10 * floor)  # the noise-like part
    total = power.sum(1)

    def band(p, lo, hi):
        return p[:, (f >= lo) & (f < hi)].sum(1)

    # rhythm: how much of the 10 ms RMS envelope's modulation lies at 2.5-9 Hz
    hop = sr // 100
    env = np.sqrt((x[:, : t // hop * hop].reshape(len(x), -1, hop) ** 2).mean(2))
    mod = np.abs(np.fft.rfft(env - env.mean(1, keepdims=True), axis=1)) ** 2
    mf = np.fft.rfftfreq(env.shape[1], 1 / 100)
    pulse = mod[:, (mf >= 2.5) & (mf <= 9)].sum(1) / (mod[:, mf > 0].sum(1) + 1e-30)

    def off_grid(p):
        # harmony: energy of strong 50-1000 Hz peaks off the harmonic grid of the lowest one
        m = (f >= 50) & (f <= 1000)
        pp, ff = p[m], f[m]
        pk = np.where((pp[1:-1] > pp[:-2]) & (pp[1:-1] >= pp[2:]))[0] + 1
        pk = pk[pp[pk] > pp.max() / 10]
        ratio = ff[pk] / ff[pk].min()
        off = np.abs(ratio - np.round(ratio)) > 0.04
        return pp[pk][off].sum() / pp[pk].sum()

    return {
        "pulse": pulse,
        "bright": band(tonal, 1500, 8000) / (tonal.sum(1) + 1e-30),  # timbre: high partials
        "low": band(power, 40, 120) / total,  # register: energy below the mid range
        "chord": np.array([off_grid(p) for p in power]),
        "hiss": band(smooth, 1000, 7000) / total,  # noise texture
    }


def test_each_class_carries_its_planted_cue(ds):
    feats = _cue_features(ds.waveforms, ds.sample_rate)
    for c, name in enumerate(CLASS_NAMES):
        auc = roc_auc_score(ds.labels == c, feats[name])
        assert auc > 0.85, f"{name}: its cue separates it from the other classes with AUC {auc:.3f}"


def test_nearest_centroid_on_the_log_spectrum_is_not_enough(ds):
    power = np.abs(np.fft.rfft(ds.waveforms.astype(np.float64), axis=1)) ** 2
    logspec = np.log(power[:, 1:8001].reshape(len(ds), 250, 32).mean(2) + 1e-20)
    logspec -= logspec.mean(1, keepdims=True)  # gain invariant
    tr, te = ds.split == 0, ds.split == 2
    centroids = np.stack([logspec[tr & (ds.labels == c)].mean(0) for c in range(5)])
    dist = ((logspec[te][:, None, :] - centroids[None]) ** 2).sum(-1)
    acc = float(np.mean(dist.argmin(1) == ds.labels[te]))
    assert 0.3 < acc < 0.9, f"nearest-centroid test accuracy {acc:.2f}"


@pytest.mark.parametrize("subtype,atol", [("PCM_16", 2.0**-15), ("FLOAT", 0.0)])
def test_write_read_round_trip(tmp_path, subtype, atol):
    d = make_dataset(seed=1, n_per_class=(2, 1, 1), duration=0.25)
    root = write_dataset(tmp_path / "data", d, subtype=subtype)
    assert sorted(p.name for p in root.iterdir()) == sorted([*CLASS_NAMES, "manifest.csv"])
    assert sorted(p.name for p in (root / "chord").iterdir()) == [f"chord.{i:05d}.wav" for i in range(4)]
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0] == {"path": "pulse/pulse.00000.wav", "label": "pulse", "split": "train"}
    assert [r["split"] for r in rows].count("test") == 5
    back = read_dataset(root)
    np.testing.assert_array_equal(back.labels, d.labels)
    np.testing.assert_array_equal(back.split, d.split)
    np.testing.assert_allclose(back.waveforms, d.waveforms, atol=atol, rtol=0)
    assert back.sample_rate == 16000


def test_read_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="no manifest.csv"):
        read_dataset(tmp_path)
    (tmp_path / "manifest.csv").write_text("path,label,split\nlow/low.00000.wav,low,train\n")
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(tmp_path)
    (tmp_path / "manifest.csv").write_text("path,label,split\nx.wav,jazz,train\n")
    with pytest.raises(DatasetError, match="bad row"):
        read_dataset(tmp_path)
