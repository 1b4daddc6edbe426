"""The README's code runs and prints what the README says (issue 16: the example keeps printing
its line; the embedding snippet runs inside jit and vmap as shown)."""

import contextlib
import io
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jsuff

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_the_first_example_prints_the_line_the_readme_states(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    # the example runs with a user's JAX defaults, not the suite's strict promotion (tests/conftest.py)
    with contextlib.redirect_stdout(out), jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        exec(BLOCKS[0], {})
    first = out.getvalue().splitlines()[0]
    assert first == "2 True True kept 0.25% of the bins, 80% of the energy"
    assert f"prints `{first}`" in README
    assert (tmp_path / "out" / "toy" / "sufficient.wav").is_file()


def test_the_embedding_snippet_runs_in_jit_and_vmap():
    (snippet,) = [b for b in BLOCKS if "candidate_labels" in b]
    t = 256
    model = jsuff.Model.from_function(lambda p, x: jnp.abs(jnp.fft.rfft(x))[:, :3] * p, 1.0, sample_rate=8000,
                                      labels="abc")
    scope = {
        "jax": jax, "jsuff": jsuff, "model": model,
        "clips": jnp.asarray(np.random.default_rng(0).standard_normal((2, t)), jnp.float32),
        "masks": jnp.ones((2, 5, t // 2 + 1), bool), "targets": jnp.array([0, 1]),
    }
    exec(snippet, scope)
    assert scope["labels"].shape == scope["conf"].shape == (2, 5)
