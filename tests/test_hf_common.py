"""Reading Hugging Face model folders: weight formats, shards, labels, defaults and bad folders."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from converters.common import ConversionError
from converters.hf_common import apply_defaults, detect_model_type, id2label_labels, read_hf_folder

_SD = {
    "a.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
    "b.bias": np.ones(4, np.float32),
    "bn.num_batches_tracked": np.array(3, np.int64),
}


def _folder(tmp_path, config=None, preprocessor=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(config or {"model_type": "toy"}))
    if preprocessor is not None:
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return tmp_path


def _check_sd(sd):
    assert set(sd) == {"a.weight", "b.bias"}  # num_batches_tracked dropped
    np.testing.assert_array_equal(sd["a.weight"], _SD["a.weight"])
    assert sd["b.bias"].dtype == np.float32


def test_safetensors_folder(tmp_path):
    root = _folder(tmp_path, {"model_type": "toy", "x": 1}, {"sampling_rate": 8000})
    save_file(_SD, str(root / "model.safetensors"))
    ckpt = read_hf_folder(root)
    _check_sd(ckpt.state_dict)
    assert ckpt.config == {"model_type": "toy", "x": 1}
    assert ckpt.preprocessor == {"sampling_rate": 8000}
    assert [p.name for p in ckpt.files] == ["config.json", "model.safetensors", "preprocessor_config.json"]


def test_config_file_override(tmp_path):
    root = _folder(tmp_path / "m", {"model_type": "toy"})
    save_file(_SD, str(root / "model.safetensors"))
    (root / "config.json").unlink()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model_type": "hubert"}))
    ckpt = read_hf_folder(root, config_file=other)
    assert ckpt.config == {"model_type": "hubert"} and ckpt.files[0] == other


def test_safetensors_preferred_over_bin(tmp_path):
    torch = pytest.importorskip("torch")
    root = _folder(tmp_path)
    save_file(_SD, str(root / "model.safetensors"))
    torch.save({"other": torch.zeros(1)}, root / "pytorch_model.bin")
    ckpt = read_hf_folder(root)
    _check_sd(ckpt.state_dict)
    assert ckpt.preprocessor == {}


def test_pytorch_bin_folder(tmp_path):
    torch = pytest.importorskip("torch")
    root = _folder(tmp_path)
    torch.save({k: torch.from_numpy(v) for k, v in _SD.items()}, root / "pytorch_model.bin")
    _check_sd(read_hf_folder(root).state_dict)


def test_sharded_safetensors(tmp_path):
    root = _folder(tmp_path)
    save_file({"a.weight": _SD["a.weight"]}, str(root / "model-00001-of-00002.safetensors"))
    save_file({"b.bias": _SD["b.bias"]}, str(root / "model-00002-of-00002.safetensors"))
    index = {"weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.bias": "model-00002-of-00002.safetensors"}}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    ckpt = read_hf_folder(root)
    _check_sd(ckpt.state_dict)
    assert len(ckpt.files) == 4
    (root / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ConversionError, match="model-00002-of-00002.safetensors"):
        read_hf_folder(root)


def test_bad_folders(tmp_path):
    with pytest.raises(ConversionError, match="not a directory"):
        read_hf_folder(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConversionError, match="config not found"):
        read_hf_folder(empty)
    root = _folder(tmp_path / "noweights")
    with pytest.raises(ConversionError, match="no weights .*model.safetensors.*pytorch_model.bin"):
        read_hf_folder(root)
    (root / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ConversionError, match="cannot read checkpoint .*model.safetensors"):
        read_hf_folder(root)
    (root / "config.json").write_text("{oops")
    with pytest.raises(ConversionError, match="config.json is not valid JSON"):
        read_hf_folder(root)


def test_detect_model_type(tmp_path):
    assert detect_model_type(_folder(tmp_path / "a", {"model_type": "hubert"})) == "hubert"
    assert detect_model_type(_folder(tmp_path / "b", {"hidden_size": 3})) is None
    assert detect_model_type(tmp_path / "missing") is None
    (tmp_path / "a" / "config.json").write_text("[1, 2]")
    assert detect_model_type(tmp_path / "a") is None
    (tmp_path / "a" / "config.json").write_text("{broken")
    assert detect_model_type(tmp_path / "a") is None


def test_id2label_labels():
    assert id2label_labels({"id2label": {"2": "c", "0": "a", "1": "b"}}) == ["a", "b", "c"]
    assert id2label_labels({"num_labels": 3}) == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert id2label_labels({}) == ["LABEL_0", "LABEL_1"]
    with pytest.raises(ConversionError, match="0..1"):
        id2label_labels({"id2label": {"0": "a", "5": "b"}})
    with pytest.raises(ConversionError, match="non-integer"):
        id2label_labels({"id2label": {"zero": "a"}})


def test_apply_defaults_does_not_mutate():
    defaults = {"n": 1, "dims": (2, 3), "eps": 1e-5}
    config = {"n": 7}
    out = apply_defaults(config, defaults)
    assert out == {"n": 7, "dims": [2, 3], "eps": 1e-5}
    assert config == {"n": 7} and defaults["dims"] == (2, 3)
