"""The zoo trainer and entry point, on a tiny test architecture and a tiny generated dataset."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jsuff.app.cli import main
from jsuff.models.base import Architecture, UnknownArchitectureError, load_model, register, save_model
from jsuff.app.zoo import (
    NO_AUGMENT,
    Augment,
    DatasetError,
    ZooError,
    ZooMember,
    augment_batch,
    load_zoo,
    make_dataset,
    read_dataset,
    read_zoo_json,
    train_model,
    train_zoo,
    zoo_accuracy,
)


class _LogSpecNet(nnx.Module):
    """Tiny test classifier: log |rfft| in bands -> strided conv1d + batch norm -> linear."""

    def __init__(self, config, rngs):
        self.bands = config["bands"]
        self.conv = nnx.Conv(1, 4, (5,), strides=(4,), rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.out = nnx.Linear(4 * self.bands // 4, config["classes"], rngs=rngs)

    def __call__(self, waveforms):
        mag = jnp.abs(jnp.fft.rfft(waveforms, axis=-1))
        per = mag.shape[-1] // self.bands
        bands = mag[:, : per * self.bands].reshape(waveforms.shape[0], self.bands, per).mean(-1)
        h = jnp.log(bands + 1e-6)
        h = (h - h.mean(-1, keepdims=True))[..., None]  # gain invariant
        h = nnx.relu(self.bn(self.conv(h)))
        return self.out(h.reshape(h.shape[0], -1))  # flattened: keeps where in frequency


ARCH = "zoo_test_logspec"
CONFIG = {"bands": 64, "classes": 5}
register(Architecture(ARCH, lambda c, r: _LogSpecNet(c, r), "test only"))
register(Architecture("zoo_test_three_logits", lambda c, r: _LogSpecNet({**c, "classes": 3}, r)))
FAST = {"batch_size": 16, "lr": 3e-2, "augment": Augment(mask_prob=0.25)}


@pytest.fixture(scope="module")
def tiny():
    return make_dataset(seed=0, n_per_class=(16, 4, 4), duration=0.25)


@pytest.fixture(scope="module")
def trained(tiny):
    return train_model(ARCH, CONFIG, tiny, seed=0, epochs=10, patience=10, **FAST)


def test_training_learns(trained):
    model, metrics = trained
    losses = [h["train_loss"] for h in metrics["history"]]
    assert np.mean(losses[-3:]) < 0.95 * np.mean(losses[:3])  # noisy: some batches are masked
    assert metrics["val_loss"] < metrics["initial_val_loss"]
    assert metrics["train_accuracy"] > 0.5 and metrics["val_accuracy"] > 0.4  # chance is 0.2
    assert metrics["epochs_run"] == 10 and metrics["steps"] == 10 * 5
    assert metrics["val_accuracy"] == max(h["val_accuracy"] for h in metrics["history"])
    json.dumps(metrics)  # it goes into zoo.json
    assert model.labels[0] == "pulse" and model.input.length == 4000 and model.arch == ARCH
    assert model.source["hyperparameters"]["lr"] == 3e-2


def test_training_is_deterministic_given_the_seed(tiny, trained):
    model, metrics = trained
    again, metrics2 = train_model(ARCH, CONFIG, tiny, seed=0, epochs=10, patience=10, **FAST)
    assert metrics2["history"] == metrics["history"]
    x = tiny.subset("test").waveforms
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(again(x)))
    _, other = train_model(ARCH, CONFIG, tiny, seed=1, epochs=1, **FAST)
    assert other["history"][0] != metrics["history"][0]


def test_saved_model_reloads_with_the_same_logits(tmp_path, tiny, trained):
    model, _ = trained
    save_model(model, tmp_path / "m")
    back = load_model(tmp_path / "m")
    x = tiny.subset("test").waveforms
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(back(x)))
    assert back.input.length == 4000 and back.source["trained_by"] == "jsuff.app.zoo.train"


def test_early_stopping_keeps_the_best_epoch(tiny):
    _, m = train_model(ARCH, CONFIG, tiny, epochs=12, patience=1, **FAST)
    hist = m["history"]
    assert m["epochs_run"] == m["best_epoch"] + 1 < 12 or m["epochs_run"] == 12
    best = max(hist, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert best["epoch"] == m["best_epoch"] and m["val_accuracy"] == best["val_accuracy"]


def test_bad_arguments_are_named(tiny):
    with pytest.raises(UnknownArchitectureError, match="zoo_test_logspec"):
        train_model("no_such_arch", {}, tiny)
    with pytest.raises(DatasetError, match="batch_size=512"):
        train_model(ARCH, CONFIG, tiny, batch_size=512)
    with pytest.raises(DatasetError, match=r"logits of shape \(16, 3\)"):
        train_model("zoo_test_three_logits", CONFIG, tiny, epochs=1, batch_size=16)
    with pytest.raises(ValueError, match="mask_prob"):
        Augment(mask_prob=1.5)


_augment = jax.jit(augment_batch, static_argnums=2)
_X = jax.random.normal(jax.random.key(0), (8, 510))  # 256 rfft bins


def test_augment_gain_only():
    np.testing.assert_array_equal(_augment(jax.random.key(1), _X, NO_AUGMENT), _X)
    y = _augment(jax.random.key(1), _X, Augment(gain_db=6.0, mask_prob=0.0))
    ratio = np.asarray(y / _X)
    assert np.allclose(ratio, ratio[:, :1], rtol=1e-5)  # one gain per example
    assert (ratio > 10 ** (-6 / 20) - 1e-6).all() and (ratio < 10 ** (6 / 20) + 1e-6).all()
    assert ratio[:, 0].std() > 0.05


def _removed_bins(aug, key):
    y = np.fft.rfft(np.asarray(_augment(jax.random.key(key), _X, aug)), axis=-1)
    x = np.fft.rfft(np.asarray(_X), axis=-1)
    removed = np.abs(y) < 1e-3
    assert (removed | np.isclose(y, x, atol=1e-3)).all()  # every bin is kept as it was or zeroed
    return removed


def test_augment_band_stop_removes_one_contiguous_band():
    removed = _removed_bins(Augment(gain_db=0.0, mask_prob=1.0, max_stop=0.5, max_drop=0.0), 2)
    for row in removed:
        idx = np.flatnonzero(row)
        assert idx.size <= 0.5 * 256 + 1 and (idx.size == 0 or np.all(np.diff(idx) == 1))
    assert removed.any()


def test_augment_block_dropout_drops_whole_blocks():
    removed = _removed_bins(Augment(gain_db=0.0, mask_prob=1.0, max_stop=0.0, max_drop=1.0, blocks=16), 3)
    per_block = removed.reshape(8, 16, 16)
    assert (per_block.all(-1) | ~per_block.any(-1)).all()
    assert 0 < removed.mean() < 1


def test_augment_masks_only_a_fraction_of_examples():
    removed = _removed_bins(Augment(gain_db=0.0, mask_prob=0.5, max_stop=0.5, max_drop=0.5), 4)
    touched = removed.any(-1)
    assert 0 < touched.sum() < 8


def test_train_zoo_saves_records_and_skips(tmp_path, tiny):
    members = [
        ZooMember("toy", ARCH, CONFIG, {"seed": 3, "epochs": 2, **FAST}),
        ZooMember("ghost", "zoo_test_not_registered", {}, {}),
    ]
    lines = []
    result = train_zoo(tmp_path, members=members, dataset=tiny, log=lines.append)
    assert "zoo_test_not_registered" in result["skipped"]["ghost"] and "toy" in result["trained"]
    assert any(line.startswith("skip ghost") for line in lines)
    record = read_zoo_json(tmp_path)
    toy = record["members"]["toy"]
    assert toy["seed"] == 3 and toy["data_seed"] == 0 and toy["jax_version"] == jax.__version__
    assert record["data"]["train_val_test"] == [80, 20, 20]
    assert zoo_accuracy(tmp_path) == {"toy": toy["test_accuracy"]}
    models = load_zoo(tmp_path)
    x = tiny.subset("test").waveforms
    acc = float(np.mean(np.asarray(models["toy"](x)).argmax(-1) == tiny.subset("test").labels))
    assert acc == toy["test_accuracy"]
    # refreshing one member keeps the others' records
    record["members"]["other"] = {"test_accuracy": 0.5, "path": "other"}
    (tmp_path / "zoo.json").write_text(json.dumps(record))
    train_zoo(tmp_path, only=["toy"], members=members, dataset=tiny)
    assert set(read_zoo_json(tmp_path)["members"]) == {"toy", "other"}
    with pytest.raises(ZooError, match="known: toy, ghost"):
        train_zoo(tmp_path, only=["nope"], members=members, dataset=tiny)
    with pytest.raises(ZooError, match="records no member 'ghost'"):
        load_zoo(tmp_path, names=["ghost"])


def test_zoo_cli(tmp_path, capsys):
    with pytest.raises(ZooError, match="run `jsuff zoo train`"):
        load_zoo(tmp_path)
    assert main(["zoo", "train", "--only", "nosuch", "--out", str(tmp_path)]) == 2
    assert "unknown zoo member 'nosuch'" in capsys.readouterr().err
    assert main(["zoo", "list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("melcnn", "rawnet2", "ast", "wav2vec2"))


def test_zoo_data_cli_writes_the_zoo_dataset(tmp_path, monkeypatch):
    import jsuff.app.zoo.registry as registry

    monkeypatch.setattr(registry, "N_PER_CLASS", (1, 1, 0))
    assert main(["zoo", "data", str(tmp_path)]) == 0
    back = read_dataset(tmp_path)
    np.testing.assert_allclose(back.waveforms, registry.zoo_dataset().waveforms, atol=2.0**-15)
