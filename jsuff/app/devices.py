"""The devices a study runs on: a 1-D mesh over this process's devices, and batched predictions.

Example:
    >>> import numpy as np
    >>> from jsuff.models import Model
    >>> m = Model.from_function(lambda p, x: x[:, :2] * p, 2.0, sample_rate=8000, labels=("a", "b"))
    >>> predict_logits(m, np.ones((3, 4), np.float32), batch=2).tolist()
    [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]]
"""

from __future__ import annotations

import jax
import numpy as np

from jsuff.app.config import StudyError
from jsuff.evaluate import predict
from jsuff.models.base import Model

__all__ = ["make_mesh", "predict_logits"]


def make_mesh(devices: int | None = None) -> jax.sharding.Mesh | None:
    """A 1-D mesh over the first ``devices`` of this process's devices (``None``: all); no mesh for
    one. (With several processes, each one's mesh holds its own devices: its units run there.)"""
    devs = jax.local_devices()
    if devices is not None:
        if devices < 1 or devices > len(devs):
            raise StudyError(f"devices must be between 1 and {len(devs)}, got {devices}")
        devs = devs[:devices]
    if len(devs) == 1:
        return None
    return jax.sharding.Mesh(np.asarray(devs), ("batch",))


def predict_logits(
    model: Model, waveforms: np.ndarray, *, batch: int = 32, mesh: jax.sharding.Mesh | None = None
) -> np.ndarray:
    """Logits of ``model`` on ``waveforms[N, T]`` in fixed-size batches (one compile per shape).

    With a mesh, each batch is split over its devices along the batch axis.
    """
    if waveforms.shape[0] == 0:
        return np.zeros((0, model.num_classes), np.float32)
    return np.asarray(predict(model.apply, model.params, waveforms, batch=batch, mesh=mesh), np.float32)
