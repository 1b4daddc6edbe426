"""The model contract: fitting clips, registry errors, model directories round trip."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jsuff.models import base
from jsuff.models.base import (
    Architecture,
    InputPolicy,
    ModelError,
    UnknownArchitectureError,
    build_model,
    expected_shapes,
    fit_length,
    load_model,
    save_model,
)


class _Tiny(nnx.Module):
    def __init__(self, config, rngs):
        self.proj = nnx.Linear(config["n"], 3, rngs=rngs)
        self.bn = nnx.BatchNorm(3, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(3, 3, rngs=rngs) for _ in range(2)])

    def __call__(self, x):
        h = self.bn(self.proj(x))
        for b in self.blocks:
            h = b(h)
        return h


_ARCH = base.register(Architecture("test_tiny", lambda c, r: _Tiny(c, r), "test only"))


def test_fit_length_policies():
    x = np.arange(1.0, 4.0)
    np.testing.assert_array_equal(fit_length(x, InputPolicy(5)), [1, 2, 3, 0, 0])
    np.testing.assert_array_equal(fit_length(x, InputPolicy(5, pad="repeat")), [1, 2, 3, 1, 2])
    np.testing.assert_array_equal(fit_length(np.arange(6.0), InputPolicy(2, crop="center")), [2, 3])
    np.testing.assert_array_equal(fit_length(x, InputPolicy(None)), x)
    with pytest.raises(ModelError, match="pad"):
        InputPolicy(4, pad="reflect")


def test_a_model_that_pads_internally_gets_shorter_clips_as_they_are():
    policy = InputPolicy(5, pads_internally=True)
    np.testing.assert_array_equal(fit_length(np.arange(1.0, 4.0), policy), [1, 2, 3])
    np.testing.assert_array_equal(fit_length(np.arange(7.0), policy), [0, 1, 2, 3, 4])  # longer: cropped
    assert InputPolicy(**policy.to_json()) == policy
    with pytest.raises(ModelError, match="pads_internally must be true or false"):
        InputPolicy(5, pads_internally="yes")


def test_unknown_architecture_lists_supported():
    with pytest.raises(UnknownArchitectureError, match="test_tiny"):
        base.get_architecture("nope")


# Run in a fresh interpreter: nothing imported yet, and no architecture registered by a test.
_FAMILY_TABLE_CHECK = """
import importlib, json, pkgutil, sys
import jsuff.models as models
from jsuff.models import base
lazy = sorted(m for m in sys.modules if m.startswith("jsuff.models."))
base.get_architecture("melcnn")
one = sorted(m for m in sys.modules if m.startswith("jsuff.models."))
for info in pkgutil.iter_modules(models.__path__):
    importlib.import_module(f"jsuff.models.{info.name}")
print(json.dumps({"lazy": lazy, "one": one, "table": base.ARCHITECTURE_MODULES,
                  "registered": {n: a.family for n, a in base._REGISTRY.items()}}))
"""


def test_the_architecture_table_names_every_family_and_is_used_lazily():
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _FAMILY_TABLE_CHECK], capture_output=True, text=True,
                          timeout=300, cwd=root, check=True)
    got = json.loads(done.stdout.splitlines()[-1])
    # every architecture any family module registers is in the table, under the module that
    # registers it (its `family`), and the table names nothing that no module registers
    assert got["table"] == got["registered"]
    assert all((root / "jsuff" / "models" / f"{m}.py").is_file() for m in got["table"].values())
    # importing jsuff.models imports no family; one architecture imports its own family only
    assert got["lazy"] == ["jsuff.models.base"]
    assert "jsuff.models.melcnn" in got["one"] and "jsuff.models.whisper" not in got["one"]
    assert not {"jsuff.models.wav2vec2", "jsuff.models.ast", "jsuff.models.aasist"} & set(got["one"])


def test_build_with_bad_params_names_every_key():
    exp = expected_shapes("test_tiny", {"n": 4})
    params = {k: np.zeros(s, np.float32) for k, s in exp.items()}
    params.pop("proj/bias")
    params["proj/kernel"] = np.zeros((5, 3), np.float32)
    params["extra/w"] = np.zeros(1, np.float32)
    with pytest.raises(ModelError) as e:
        build_model("test_tiny", {"n": 4}, params, sample_rate=8000, labels="abc")
    msg = str(e.value)
    assert "proj/bias" in msg and "extra/w" in msg and "proj/kernel: got (5, 3)" in msg


def test_save_load_round_trip(tmp_path):
    m = build_model("test_tiny", {"n": 4}, sample_rate=8000, labels=["a", "b", "c"], input=InputPolicy(4))
    x = jax.random.normal(jax.random.key(0), (2, 4))
    save_model(m, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["arch"] == "test_tiny" and meta["input"]["length"] == 4
    m2 = load_model(tmp_path / "m")
    np.testing.assert_allclose(m(x), m2(x), atol=0)
    assert m2.labels == ("a", "b", "c") and m2.sample_rate == 8000
    with pytest.raises(ModelError, match="already exists"):
        save_model(m, tmp_path / "m")
    # the apply function is pure over params: jit and vmap agree with eager
    eager = m.apply(m.params, x)
    np.testing.assert_allclose(jax.jit(m.apply)(m.params, x), eager, atol=1e-6)
    per = jax.vmap(lambda xi: m.apply(m.params, xi[None])[0])(x)
    np.testing.assert_allclose(per, eager, atol=1e-6)


def test_load_model_errors(tmp_path):
    with pytest.raises(ModelError, match="not a jsuff model directory"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text("{bad")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"arch": "nope", "config": {}, "labels": [], "sample_rate": 1}))
    with pytest.raises(UnknownArchitectureError):
        load_model(tmp_path)


def test_model_call_is_jitted_and_batch_first():
    m = build_model("test_tiny", {"n": 4}, sample_rate=8000, labels="abc", input=InputPolicy(4))
    out = m(jnp.ones((5, 4)))
    assert out.shape == (5, 3)
