"""Hostile and damaged inputs to convert, load and predict (issue 14, items 6, 7, 12 and 14).

* TorchScript files are read as data: a scripted module whose ``__setstate__`` writes a file is
  refused and writes nothing; a pickle that calls a function is refused;
* model directories: labels that do not name the outputs, non-finite weights, a corrupted
  parameter file, old directories without a checksum, permissions that follow the umask;
* ``jsuff predict`` on a mix of good and bad files, truncated WAVs, unreadable files.
"""

import errno
import json
import os
import pickle
import stat
import zipfile
from pathlib import Path
from typing import Tuple

import numpy as np
import orbax.checkpoint as ocp
import pytest
import soundfile as sf
from flax import nnx

import jsuff.audio
from jsuff.audio import AudioError, load_audio
from jsuff.app.cli import main
from jsuff.models import base
from jsuff.models.base import InputPolicy, ModelError, build_model, load_model, save_model
from jsuff.app.zoo import ZOO_DIR, read_zoo_json

try:
    import torch
except ImportError:  # the torch extra is optional; the TorchScript tests skip
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch (the [torch] extra) is not installed")

SR = 8000
BANDS = [[100, 300], [400, 700], [900, 1300], [1500, 2200], [2500, 3500]]  # 5 outputs
LABELS = ["a", "b", "c", "d", "e"]


def _toy(labels=LABELS, **config):
    cfg = {"sample_rate": SR, "bands": BANDS, **config}
    return build_model("bandpower", cfg, sample_rate=SR, labels=labels, input=InputPolicy(length=SR // 4))


@pytest.fixture
def model_dir(tmp_path):
    return save_model(_toy(), tmp_path / "toy")


def _edit_json(path: Path, **changes):
    meta = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    path.write_text(json.dumps(meta))


# ----------------------------------------------------------------------------------------------
# TorchScript: never executed (item 6)
# ----------------------------------------------------------------------------------------------

if torch is not None:

    class Evil(torch.nn.Module):
        """Its __setstate__ creates and writes the file at ``path`` when torch.jit.load runs it."""

        def __init__(self, path: str):
            super().__init__()
            self.path = path
            self.w = torch.nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.w

        @torch.jit.export
        def __getstate__(self) -> Tuple[str, torch.Tensor, bool]:
            return (self.path, self.w, self.training)

        @torch.jit.export
        def __setstate__(self, state: Tuple[str, torch.Tensor, bool]) -> None:
            self.path = state[0]
            t = torch.from_file(self.path, shared=True, size=4, dtype=torch.uint8)
            t.fill_(65)
            self.w = state[1] + t.float()  # used, so the write is not optimised away
            self.training = state[2]

    class Benign(torch.nn.Module):
        """Parameters, buffers (one non-contiguous), a bias-free layer, half precision, nesting."""

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(2, 3, 3, bias=False)
            self.bn = torch.nn.BatchNorm1d(3)
            self.blocks = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            self.register_buffer("table", torch.arange(6.0).reshape(2, 3).t())
            self.scale = torch.nn.Parameter(torch.linspace(-1, 1, 5).half())
            self.note = "a plain attribute"

        def forward(self, x):
            return self.blocks(self.bn(self.conv(x)).mean(-1))


@pytest.fixture
def evil_jit(tmp_path):
    """``(file, marker)``: a TorchScript file named like silero's that would create ``marker``."""
    marker = tmp_path / "pwned"
    path = tmp_path / "silero_vad_evil.jit"
    torch.jit.save(torch.jit.script(Evil(str(marker))), str(path))
    assert not marker.exists()
    return path, marker


@needs_torch
def test_the_evil_file_really_runs_code_under_torch_jit_load(evil_jit):
    # The premise of the tests below: loading this file the usual way writes the marker.
    path, marker = evil_jit
    torch.jit.load(str(path))
    assert marker.read_bytes() == b"AAAA"


@needs_torch
@pytest.mark.parametrize("arch", [None, "silero_vad"])
def test_convert_refuses_a_torchscript_file_without_running_it(evil_jit, tmp_path, capsys, arch):
    path, marker = evil_jit
    dest = tmp_path / "out"
    argv = ["convert", str(path), "--out", str(dest)] + (["--arch", arch] if arch else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jsuff: error:") and str(path) in err
    assert "never runs their code" in err and "__setstate__" in err
    assert not marker.exists() and not dest.exists()


@needs_torch
def test_read_state_dict_reads_torchscript_as_data(evil_jit):
    from converters.common import ConversionError, read_state_dict

    path, marker = evil_jit
    as_pt = path.with_name("evil.pt")  # any converter that reads a .pt/.pth goes through here
    path.rename(as_pt)
    with pytest.raises(ConversionError, match="never runs their code"):
        read_state_dict(as_pt)
    assert not marker.exists()


@needs_torch
def test_a_pickle_that_calls_a_function_is_refused(evil_jit, tmp_path):
    from converters._torchscript import read_torchscript
    from converters.common import ConversionError

    path, _ = evil_jit
    made = tmp_path / "made_by_the_pickle"

    class Call:
        def __reduce__(self):
            return (os.mkdir, (str(made),))

    hostile = tmp_path / "silero_vad_pickle.jit"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(hostile, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                data = pickle.dumps(Call(), protocol=2)
            dst.writestr(info, data)
    with pytest.raises(ConversionError, match=r"refusing (os|posix)\.mkdir"):
        read_torchscript(hostile)
    assert not made.exists()


@needs_torch
def test_torchscript_reader_equals_jit_state_dict(tmp_path):
    from converters._torchscript import is_torchscript, read_torchscript

    torch.manual_seed(0)
    module = Benign()
    module.bn.running_mean.uniform_()
    path = tmp_path / "benign.pt"
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    assert is_torchscript(path) and not is_torchscript(Path(__file__))
    ours = read_torchscript(path)
    theirs = torch.jit.load(str(path)).state_dict()  # our own file: safe to load
    assert list(ours) == list(theirs)
    assert "conv.bias" not in ours and "table" in ours and "bn.num_batches_tracked" in ours
    for k, v in theirs.items():
        assert ours[k].dtype == np.dtype(str(v.dtype).removeprefix("torch.")), k
        np.testing.assert_array_equal(ours[k], v.numpy(), err_msg=k)


# ----------------------------------------------------------------------------------------------
# Model directories (items 7 and 12)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        (["a", "b", "c"], "3 labels for a model with 5 outputs"),
        (LABELS + ["f", "g"], "7 labels for a model with 5 outputs"),
        (["a", "b", "a", "c", "d"], "duplicate labels 'a' (at 0, 2)"),
        ("abcde", "'labels' must be a list of strings, one per output, got str"),
        ([0, 1, 2, 3, 4], "labels must be strings; not a string: label 0 (int 0)"),
    ],
)
def test_model_json_labels_must_name_every_output(model_dir, labels, problem):
    _edit_json(model_dir / "model.json", labels=labels)
    with pytest.raises(ModelError) as e:
        load_model(model_dir)
    assert str(model_dir / "model.json") in str(e.value) and problem in str(e.value)


def test_build_refuses_labels_that_do_not_fit():
    with pytest.raises(ModelError, match="3 labels for a model with 5 outputs"):
        _toy(labels=["a", "b", "c"])
    with pytest.raises(ModelError, match="duplicate labels 'x' \\(at 0, 1, 2, 3, 4\\)"):
        _toy(labels=["x"] * 5)


def test_non_finite_weights_are_refused_at_build_save_and_load(model_dir, tmp_path):
    flat = base.flatten(nnx.to_pure_dict(_toy().params))
    flat["weights"] = np.array(flat["weights"])
    flat["weights"][1, 2] = np.nan
    flat["bias"] = np.array(flat["bias"])
    flat["bias"][[0, 3]] = [np.inf, -np.inf]
    cfg = {"sample_rate": SR, "bands": BANDS}
    with pytest.raises(ModelError) as e:  # every converter builds through here
        build_model("bandpower", cfg, flat, sample_rate=SR, labels=LABELS, source={"files": [{"path": "x.pth"}]})
    assert str(e.value) == (
        "parameters for bandpower (from x.pth): non-finite weights in 2 tensors: "
        "bias (2 Inf of 5 values); weights (1 NaN of 25 values)"
    )
    with pytest.raises(ModelError, match=r"cannot save .*nan: non-finite weights in 1 tensor: bias \(1 NaN"):
        save_model(_toy(bias=[0, 0, float("nan"), 0, 0]), tmp_path / "nan")
    assert not (tmp_path / "nan").exists()
    # A directory whose weights are NaN and whose checksums agree (re-written by another tool)
    params = model_dir / "params"
    pure = nnx.to_pure_dict(_toy().params)
    pure["weights"] = np.asarray(pure["weights"]).copy()
    pure["weights"][0, 0] = np.nan
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(params, pure, force=True)
    ckpt.wait_until_finished()
    ckpt.close()
    _edit_json(model_dir / "model.json", params_sha256=base._params_checksums(params))
    with pytest.raises(ModelError, match=r"params: non-finite weights in 1 tensor: weights \(1 NaN of 25 values\)"):
        load_model(model_dir)


@needs_torch
def test_convert_refuses_non_finite_weights_naming_them(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from tests.helpers.hf import W2V2_TINY as TINY

    torch.manual_seed(0)
    hf = transformers.HubertForSequenceClassification(transformers.HubertConfig(**TINY)).eval()
    with torch.no_grad():
        hf.classifier.weight[1, 2] = float("nan")
        hf.projector.bias[0] = float("inf")
    hf.save_pretrained(tmp_path / "hf")
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(tmp_path / "hf")
    dest = tmp_path / "out"
    assert main(["convert", str(tmp_path / "hf"), "--out", str(dest)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("jsuff: error: parameters for hubert (from config.json, model.safetensors, ")
    assert err.endswith(
        "non-finite weights in 2 tensors: classifier/kernel (1 NaN of 24 values); projector/bias (1 Inf of 8 values)"
    )
    assert not dest.exists()


def test_a_flipped_bit_in_params_is_reported_as_corruption(model_dir):
    x = np.random.default_rng(0).normal(size=(2, SR // 4)).astype(np.float32)
    before = np.asarray(load_model(model_dir)(x))
    files = [p for p in (model_dir / "params").rglob("*") if p.is_file()]
    victim = max(files, key=lambda p: p.stat().st_size)
    intact = victim.read_bytes()
    flipped = bytearray(intact)
    flipped[len(flipped) // 2] ^= 0x10
    victim.write_bytes(bytes(flipped))
    with pytest.raises(ModelError) as e:
        load_model(model_dir)
    msg = str(e.value)
    assert "is corrupt" in msg and f"changed since the model was saved: {victim}" in msg
    victim.write_bytes(intact)  # the check is exact: the intact file loads again, unchanged
    np.testing.assert_array_equal(np.asarray(load_model(model_dir)(x)), before)
    victim.unlink()
    with pytest.raises(ModelError, match=f"missing: {victim}"):
        load_model(model_dir)


def test_directories_without_a_checksum(model_dir):
    x = np.random.default_rng(1).normal(size=(2, SR // 4)).astype(np.float32)
    expected = np.asarray(load_model(model_dir)(x))
    meta = model_dir / "model.json"
    _edit_json(meta, params_sha256=None, format_version=1)  # as jsuff wrote them before checksums
    with pytest.warns(UserWarning, match="records no checksum of its parameters .* re-saving it"):
        old = load_model(model_dir)
    np.testing.assert_array_equal(np.asarray(old(x)), expected)
    _edit_json(meta, format_version=2)
    with pytest.raises(ModelError, match="format_version 2.*lacks 'params_sha256'"):
        load_model(model_dir)
    _edit_json(meta, format_version=99)
    with pytest.raises(ModelError, match="format_version 99; this jsuff reads up to 2"):
        load_model(model_dir)


def test_committed_zoo_models_carry_checksums():
    for name, member in read_zoo_json()["members"].items():
        root = Path(ZOO_DIR) / member["path"]
        meta = json.loads((root / "model.json").read_text())
        assert meta["format_version"] == 2 and meta["params_sha256"], name
        base._verify_checksums(root, meta["params_sha256"], root / "model.json")


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002], ids=oct)
def test_model_directories_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        dest = save_model(_toy(), tmp_path / "m")
    finally:
        os.umask(old)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in [dest, *dest.rglob("*")] if p.is_dir()}
    files = {stat.S_IMODE(p.stat().st_mode) for p in dest.rglob("*") if p.is_file()}
    assert modes == {0o777 & ~umask} and files == {0o666 & ~umask}


# ----------------------------------------------------------------------------------------------
# Audio files and `jsuff predict` (item 14)
# ----------------------------------------------------------------------------------------------


def _tone(path: Path, hz: float, seconds: float = 0.25, **kw) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32), SR, **kw)
    return path


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_predict_reports_each_file_and_fails_if_any_failed(model_dir, tmp_path, capsys):
    good = _tone(tmp_path / "good.wav", 200)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF but not really audio")
    good2 = _tone(tmp_path / "good2.wav", 1000)
    assert main(["predict", str(model_dir), str(good), str(bad), str(good2)]) == 1
    out, err = capsys.readouterr()
    lines = [line.split("\t")[:2] for line in out.splitlines()]
    assert lines == [[str(good), "a"], [str(good2), "c"]]
    assert f"jsuff: error: {bad}: cannot decode audio" in err and "1 of 3 files could not be labelled" in err
    assert main(["predict", str(model_dir), str(good), str(bad), str(good2), "--json"]) == 1
    results = json.loads(capsys.readouterr().out)
    assert [r.get("label") for r in results] == ["a", None, "c"]
    assert results[1]["file"] == str(bad) and "cannot decode audio" in results[1]["error"]
    assert main(["predict", str(model_dir), str(good), str(good2)]) == 0


@pytest.mark.parametrize(("fmt", "subtype"), [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("RF64", "PCM_24")])
def test_truncated_wav_is_an_error_naming_the_file(tmp_path, fmt, subtype):
    path = _tone(tmp_path / "clip.wav", 440, seconds=0.5, format=fmt, subtype=subtype)
    assert load_audio(path)[0].shape == (SR // 2,)
    _truncate(path)
    with pytest.raises(AudioError) as e:
        load_audio(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: truncated WAV file: its header declares {SR // 2} frames")
    assert "the file was cut short" in msg


def test_wav_with_a_chunk_after_the_data_is_not_truncated(tmp_path):
    path = _tone(tmp_path / "clip.wav", 440)
    data = bytearray(path.read_bytes()) + b"LIST\x04\x00\x00\x00INFO"
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert load_audio(path)[0].shape == (SR // 4,)


def test_unreadable_file_is_a_permission_error(model_dir, tmp_path, monkeypatch, capsys):
    path = _tone(tmp_path / "locked.wav", 440)
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: fail open() the way the OS does for others

        def deny(file, *args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))

        monkeypatch.setattr(jsuff.audio, "open", deny, raising=False)
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert str(e.value).startswith(f"{path}: permission denied") and "decode" not in str(e.value)
    assert main(["predict", str(model_dir), str(path)]) == 1
    assert f"{path}: permission denied" in capsys.readouterr().err

