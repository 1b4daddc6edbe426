"""Shared machinery for PyTorch checkpoint -> jsuff model conversion.

Each family converter is an explicit key-map table: rows of ``(torch pattern, flax path pattern,
transform)``. Patterns may contain ``{i}``, ``{j}`` ... placeholders for layer indices. The
transforms are named functions (``linear``, ``conv1d``, ``conv2d`` ...) so the layout rule each row
applies is visible in the table. :func:`map_state_dict` applies a table and reports every missing,
unexpected and mis-shaped key in one :class:`ConversionError`.

This package is the only place in the project that may import torch, and only lazily: reading a
``.safetensors`` file needs no torch at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jsuff.models.base import (
    InputPolicy,
    Model,
    ModelError,
    build_model,
    expected_shapes,
    save_model,
    sha256_file,
)

Transform = Callable[[np.ndarray], np.ndarray]


class ConversionError(ModelError):
    """A checkpoint that cannot be converted; the message names the file and every bad key."""


# ----------------------------------------------------------------------------------------------
# Named layout transforms (SPEC §6)
# ----------------------------------------------------------------------------------------------


def identity(w: np.ndarray) -> np.ndarray:
    return w


def linear(w: np.ndarray) -> np.ndarray:
    """torch Linear (out, in) -> flax kernel (in, out)."""
    return np.ascontiguousarray(w.T)


def conv1d(w: np.ndarray) -> np.ndarray:
    """torch Conv1d (O, I, K) -> flax (K, I, O)."""
    return np.ascontiguousarray(w.transpose(2, 1, 0))


def conv2d(w: np.ndarray) -> np.ndarray:
    """torch Conv2d (O, I, H, W) -> flax (H, W, I, O)."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


TRANSFORMS: dict[str, Transform] = {
    "identity": identity,
    "linear": linear,
    "conv1d": conv1d,
    "conv2d": conv2d,
}


def fold_weight_norm(g: np.ndarray, v: np.ndarray, dim: int = 0) -> np.ndarray:
    """``w = g * v / ||v||`` with the norm over every axis but ``dim`` (torch's weight_norm)."""
    axes = tuple(a for a in range(v.ndim) if a != dim % v.ndim)
    norm = np.sqrt(np.sum(np.square(v.astype(np.float64)), axis=axes, keepdims=True))
    return (g.astype(np.float64) * v / norm).astype(v.dtype)


def fold_weight_norms(sd: Mapping[str, np.ndarray], dim: int = 0) -> dict[str, np.ndarray]:
    """Replace every weight-norm pair by a plain ``.weight``.

    Handles both the old ``X.weight_g`` / ``X.weight_v`` and the parametrization form
    ``X.parametrizations.weight.original0`` / ``original1``.
    """
    out = dict(sd)
    for key in list(sd):
        for g_suffix, v_suffix in (
            (".weight_g", ".weight_v"),
            (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
        ):
            if key.endswith(g_suffix):
                base = key[: -len(g_suffix)]
                v_key = base + v_suffix
                if v_key in sd:
                    out[base + ".weight"] = fold_weight_norm(sd[key], sd[v_key], dim)
                    out.pop(key)
                    out.pop(v_key)
    return out


# ----------------------------------------------------------------------------------------------
# Reading checkpoints
# ----------------------------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a PyTorch state_dict as float32/int numpy arrays.

    ``.safetensors`` is read with ``safetensors.numpy`` (no torch). ``.bin``/``.pth``/``.pt`` use
    ``torch.load(weights_only=True)``, which unpickles tensors and containers only; a checkpoint
    that wraps its state_dict under ``"model"`` or ``"state_dict"`` is unwrapped. A TorchScript
    archive gives its module's parameters and buffers, read as data: its code never runs
    (:mod:`converters._torchscript`). ``num_batches_tracked`` counters are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint file not found: {path}")
    from converters._torchscript import is_torchscript, read_torchscript

    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            raw: Mapping[str, Any] = load_file(str(path))
        elif is_torchscript(path):  # torch.load would refuse it (weights_only), jit.load would run it
            raw = read_torchscript(path)
        else:
            import torch

            obj = torch.load(str(path), map_location="cpu", weights_only=True)
            for wrapper in ("state_dict", "model", "model_state_dict"):
                if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
                    obj = obj[wrapper]
            if not isinstance(obj, Mapping):
                raise ConversionError(f"{path} does not hold a state_dict (got {type(obj).__name__})")
            raw = {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in obj.items()}
    except ConversionError:
        raise
    except Exception as e:  # corrupt or truncated files raise many types
        raise ConversionError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    sd = {}
    for k, v in raw.items():
        if k.endswith("num_batches_tracked"):
            continue
        a = np.asarray(v)
        sd[k] = a.astype(np.float32) if np.issubdtype(a.dtype, np.floating) else a
    return sd


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{what} {path} is not valid JSON: {e}") from None


# ----------------------------------------------------------------------------------------------
# Key maps
# ----------------------------------------------------------------------------------------------

Rule = tuple[str, str, str]  # (torch pattern, flax pattern, transform name)


def _compile(pattern: str) -> tuple[re.Pattern[str], list[str]]:
    names = re.findall(r"\{(\w+)\}", pattern)
    rx = re.escape(pattern)
    for n in names:
        rx = rx.replace(re.escape("{" + n + "}"), rf"(?P<{n}>\d+)")
    return re.compile(rx + r"\Z"), names


def map_state_dict(
    sd: Mapping[str, np.ndarray],
    rules: Sequence[Rule],
    expected: Mapping[str, tuple[int, ...]],
    *,
    source: str,
    ignore: Iterable[str] = (),
    transforms: Mapping[str, Transform] | None = None,
) -> dict[str, np.ndarray]:
    """Apply a key-map table and check the result against the expected flax shapes.

    Args:
        sd: torch key -> array (after any folding/splitting the family needs).
        rules: ``(torch pattern, flax pattern, transform name)`` rows.
        expected: flax path -> shape (from :func:`jsuff.models.base.expected_shapes`).
        source: the checkpoint's name for error messages.
        ignore: regexes of torch keys that are deliberately unused (say why at the call site).
        transforms: extra named transforms beside :data:`TRANSFORMS`.

    Raises:
        ConversionError: one error naming every missing, unexpected and mis-shaped key.
    """
    named = {**TRANSFORMS, **(transforms or {})}
    compiled = []
    for src, dst, tname in rules:
        if tname not in named:
            raise ValueError(f"key-map rule {src!r} names unknown transform {tname!r}")
        compiled.append((*_compile(src), dst, named[tname], src))
    ignore_rx = [re.compile(p) for p in ignore]
    out: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    unexpected: list[str] = []
    for key, value in sd.items():
        for rx, _names, dst, fn, _src in compiled:
            m = rx.match(key)
            if m:
                path = dst.format(**m.groupdict())
                out[path] = fn(np.asarray(value))
                origin[path] = key
                break
        else:
            if not any(r.search(key) for r in ignore_rx):
                unexpected.append(key)
    missing = sorted(set(expected) - set(out))
    mapped_nowhere = sorted(set(out) - set(expected))
    mis = sorted(
        f"{origin[p]} -> {p}: got {tuple(out[p].shape)}, expected {tuple(expected[p])}"
        for p in set(out) & set(expected)
        if tuple(out[p].shape) != tuple(expected[p])
    )
    if missing or unexpected or mis or mapped_nowhere:
        lines = [f"cannot convert {source}:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): " + ", ".join(missing))
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): " + ", ".join(sorted(unexpected)))
        if mapped_nowhere:
            lines.append(
                f"  unexpected after mapping ({len(mapped_nowhere)}): "
                + ", ".join(f"{origin[p]} -> {p}" for p in mapped_nowhere)
            )
        if mis:
            lines.append(f"  mis-shaped ({len(mis)}): " + "; ".join(mis))
        raise ConversionError("\n".join(lines))
    return out


# ----------------------------------------------------------------------------------------------
# Writing the result
# ----------------------------------------------------------------------------------------------


def finish(
    *,
    arch: str,
    config: Mapping[str, Any],
    params: Mapping[str, np.ndarray],
    labels: Sequence[str],
    sample_rate: int,
    input: InputPolicy,
    source_files: Sequence[str | Path],
    dest: str | Path | None,
    overwrite: bool = False,
    extra_source: Mapping[str, Any] | None = None,
) -> Model:
    """Build the jsuff model from converted parameters and (if ``dest``) save it atomically."""
    exp = expected_shapes(arch, config)
    missing = sorted(set(exp) - set(params))
    if missing:  # map_state_dict already checks; this guards hand-assembled parameter dicts
        raise ConversionError(f"converted parameters for {arch} lack: {', '.join(missing)}")
    source = {
        "files": [{"path": str(Path(f).name), "sha256": sha256_file(f)} for f in source_files],
        **(extra_source or {}),
    }
    model = build_model(
        arch, config, params, sample_rate=sample_rate, labels=labels, input=input, source=source
    )
    if dest is not None:
        save_model(model, dest, overwrite=overwrite)
    return model
