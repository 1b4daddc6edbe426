"""Helpers for parity tests against tiny random-initialised transformers models (torch on CPU).

Not a test module: ``test_ast.py`` and ``test_whisper.py`` import it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch


def randomize_(model: torch.nn.Module, seed: int, scale: float = 0.3) -> torch.nn.Module:
    """Perturb every parameter in place, LayerNorm scales, tokens and position tables included.

    transformers initialises LayerNorm to (1, 0) and AST's tokens and positions to 0, which
    would hide a port that ignores them; after this every tensor matters.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model.eval()


def save_folder(model, extractor, path: Path, *, weights: str = "safetensors") -> Path:
    """``save_pretrained`` model and extractor into ``path``.

    ``weights="bin"`` replaces ``model.safetensors`` by a ``pytorch_model.bin`` of the in-memory
    ``state_dict`` (transformers 5 module names, where they differ from the names on disk).
    """
    model.save_pretrained(path)
    extractor.save_pretrained(path)
    if weights == "bin":
        (path / "model.safetensors").unlink()
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    return path


def waveforms(n: int, length: int, seed: int = 0) -> np.ndarray:
    """``n`` float32 clips: tones at different pitches and levels over white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000.0
    clips = []
    for _ in range(n):
        f0 = rng.uniform(100.0, 3000.0)
        tone = rng.uniform(0.05, 0.5) * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 6.28))
        noise = rng.uniform(0.005, 0.1) * rng.standard_normal(length)
        clips.append(tone + noise)
    return np.asarray(clips, np.float32)


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def copy_folder(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def edit_weights(folder: Path, edit) -> None:
    """Rewrite ``folder/model.safetensors`` as ``edit(state_dict)`` returns it."""
    from safetensors.numpy import load_file, save_file

    path = folder / "model.safetensors"
    save_file(edit(dict(load_file(str(path)))), str(path))
