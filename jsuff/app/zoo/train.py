"""Train any registered architecture on a :class:`~jsuff.app.zoo.data.Dataset` with optax.

One generic loop serves every zoo member: AdamW with warm-up and cosine decay, gradient clipping,
softmax cross-entropy, batch norm in training mode while training, early stopping on validation
accuracy, and the best epoch's parameters returned as an inference-mode
:class:`~jsuff.models.Model`. The whole step (augmentation, forward, backward, update) is one
``jax.jit`` call over the split ``nnx`` state, so it compiles once per run.

Augmentation, and why. jsuff evaluates models on *partial* spectra: the search removes rfft bins
(sets them to zero) and asks whether the label survives. A model that only ever saw full clips
can answer anything on such inputs (often one class for every sparse spectrum), which makes every
sufficient set trivial or impossible and says nothing about where the model's evidence lies. So a
fraction ``mask_prob`` of the training examples has part of its spectrum removed in the same way
(rfft, multiply by a keep mask, irfft), with the original label:

* a *band stop*: one contiguous band of ``U(0, max_stop)`` of the bins is zeroed;
* *block dropout*: the bins are cut into ``blocks`` contiguous blocks (like the search's boxes,
  never single bins, which would smear the clip in time) and each is dropped with probability
  ``U(0, max_drop)`` drawn per example.

The other examples stay whole, so accuracy on natural clips is what the model is selected on.
Every example also gets a random gain of ``U(-gain_db, gain_db)`` dB, so absolute level is not a
cue (the generated data already varies it; the search's removals lower it further).

Example:
    >>> from jsuff.app.zoo.data import make_dataset
    >>> ds = make_dataset(n_per_class=(4, 2, 2))
    >>> model, metrics = train_model("my_arch", {}, ds, epochs=2)  # my_arch: a registered architecture  # doctest: +SKIP
    >>> metrics["test_accuracy"]  # the held-out accuracy  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jsuff.models.base import InputPolicy, Model, get_architecture
from jsuff.app.zoo.data import Dataset, DatasetError

__all__ = ["Augment", "NO_AUGMENT", "augment_batch", "lr_schedule", "train_model"]


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training-time augmentation (see the module docstring for the reasons).

    Attributes:
        gain_db: every example is scaled by ``U(-gain_db, gain_db)`` dB.
        mask_prob: probability that an example's spectrum is partially removed.
        max_stop: the band stop's width is ``U(0, max_stop)`` of the rfft bins.
        max_drop: block dropout's rate is ``U(0, max_drop)`` per example.
        blocks: how many contiguous blocks the rfft bins are cut into for dropout.
    """

    gain_db: float = 6.0
    mask_prob: float = 0.5
    max_stop: float = 0.3
    max_drop: float = 0.8
    blocks: int = 64

    def __post_init__(self) -> None:
        for name in ("mask_prob", "max_stop", "max_drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"Augment.{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.blocks < 1 or self.gain_db < 0:
            raise ValueError(f"Augment needs blocks >= 1 and gain_db >= 0, got {self}")


NO_AUGMENT = Augment(gain_db=0.0, mask_prob=0.0)


def augment_batch(key: jax.Array, waveforms: jax.Array, aug: Augment) -> jax.Array:
    """Apply :class:`Augment` to ``waveforms[B, T]`` (pure; jit with ``aug`` static).

    Example:
        >>> x = jnp.ones((2, 64))
        >>> augment_batch(jax.random.key(0), x, NO_AUGMENT).shape
        (2, 64)
    """
    b, t = waveforms.shape
    n_bins = t // 2 + 1
    k_gain, k_coin, k_start, k_width, k_rate, k_blocks = jax.random.split(key, 6)
    gain_db = jax.random.uniform(k_gain, (b, 1), minval=-aug.gain_db, maxval=aug.gain_db)
    x = waveforms * 10.0 ** (gain_db / 20.0)
    if aug.mask_prob == 0.0:
        return x
    pos = (jnp.arange(n_bins, dtype=jnp.float32) / n_bins)[None, :]
    width = jax.random.uniform(k_width, (b, 1), maxval=aug.max_stop)
    start = jax.random.uniform(k_start, (b, 1)) * (1.0 - width)
    stop = (pos >= start) & (pos < start + width)
    rate = jax.random.uniform(k_rate, (b, 1), maxval=aug.max_drop)
    dropped = jax.random.uniform(k_blocks, (b, aug.blocks)) < rate
    block_of_bin = jnp.arange(n_bins) * aug.blocks // n_bins
    keep = ~stop & ~dropped[:, block_of_bin]
    spec = jnp.fft.rfft(x, axis=-1)
    masked = jnp.fft.irfft(spec * keep.astype(spec.dtype), n=t, axis=-1).astype(x.dtype)
    coin = jax.random.uniform(k_coin, (b, 1)) < aug.mask_prob
    return jnp.where(coin, masked, x)


def _batches(n: int, batch_size: int) -> list[np.ndarray]:
    """Index batches covering ``0..n-1``, the last one padded by repeating index 0."""
    out = []
    for lo in range(0, n, batch_size):
        idx = np.arange(lo, min(lo + batch_size, n))
        out.append(np.concatenate([idx, np.zeros(batch_size - idx.size, idx.dtype)]))
    return out


def lr_schedule(peak: float, warmup: int, total: int, final: float = 0.05) -> np.ndarray:
    """Per-step learning rates: linear warm-up to ``peak`` over ``warmup`` steps (at least one),
    then cosine decay to ``final * peak`` at the last of ``total`` steps.

    Example:
        >>> [round(float(v), 3) for v in lr_schedule(1.0, 2, 5)]
        [0.5, 1.0, 0.762, 0.287, 0.05]
    """
    warmup = max(int(warmup), 1)
    step = np.arange(total, dtype=np.float64)
    rise = (step + 1) / warmup
    frac = np.clip((step - warmup + 1) / max(total - warmup, 1), 0.0, 1.0)
    fall = final + (1 - final) * 0.5 * (1 + np.cos(np.pi * frac))
    return (peak * np.where(step < warmup, rise, fall)).astype(np.float32)


def _scale_by_lr() -> optax.GradientTransformationExtraArgs:
    """``updates * -lr`` with ``lr`` given to each update, so a schedule never recompiles."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, *, lr):
        del params
        return jax.tree.map(lambda u: -lr * u, updates), state

    return optax.GradientTransformationExtraArgs(init, update)


@functools.lru_cache(maxsize=64)
def _optimizer(weight_decay: float, clip_norm: float) -> optax.GradientTransformation:
    # AdamW spelled out so the learning rate is an argument of the step, not part of the
    # transformation. Cached so that equal settings give the same object: it belongs to the
    # optimizer's graph definition, a static argument of the jitted step, so a rerun (another
    # seed, another epoch budget) reuses the compiled step.
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.scale_by_adam(),
        optax.add_decayed_weights(weight_decay),
        _scale_by_lr(),
    )


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _train_step(train_def, opt_def, aug: Augment, state, opt_state, x, y, key, lr):
    """One AdamW step on an augmented batch; the graph definitions are static (hashable)."""
    model = nnx.merge(train_def, state)
    optimizer = nnx.merge(opt_def, opt_state)
    x = augment_batch(key, x, aug)

    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    # optax's Adam bias correction raises a float to an int32 step count, which strict dtype
    # promotion (our test setting) rejects; its numerics are optax's own, so let it promote.
    with jax.numpy_dtype_promotion("standard"):
        optimizer.update(model, grads, lr=lr)
    return nnx.state(model), nnx.state(optimizer), loss


@functools.partial(jax.jit, static_argnums=0)
def _logits(eval_def, state, x):
    return nnx.merge(eval_def, state)(x)


def train_model(
    arch: str,
    config: Mapping[str, Any],
    dataset: Dataset,
    *,
    seed: int = 0,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    warmup_epochs: float = 1.0,
    clip_norm: float = 1.0,
    patience: int = 8,
    bn_momentum: float | None = 0.9,
    augment: Augment = Augment(),
    log: Callable[[str], None] | None = None,
) -> tuple[Model, dict[str, Any]]:
    """Train ``arch`` (a registered architecture) on ``dataset`` and return the best epoch.

    Training uses the ``train`` split (batch norm in training mode, the last incomplete batch of
    each shuffled epoch dropped so shapes stay static); after every epoch the ``val`` split is
    scored in inference mode and the parameters with the best validation accuracy (ties: lower
    validation loss) are kept; training stops after ``patience`` epochs without improvement.

    Args:
        arch: architecture name; its module must map ``waveforms[B, T]`` to ``logits[B, C]``
            with ``C`` the dataset's number of classes.
        config: the architecture's config (JSON-serialisable).
        dataset: clips with ``train``, ``val`` and ``test`` splits.
        seed: seeds the initialisation, the shuffling and the augmentation (deterministic on CPU).
        epochs: the most epochs to run.
        batch_size: training and evaluation batch size.
        lr: peak learning rate (linear warm-up over ``warmup_epochs``, cosine decay to 5%).
        weight_decay: AdamW decoupled weight decay.
        warmup_epochs: epochs of linear warm-up.
        clip_norm: global gradient-norm clip.
        patience: epochs without a better validation score before stopping.
        bn_momentum: momentum of every ``nnx.BatchNorm``'s running averages while training
            (``None`` keeps the module's own). Flax's default 0.99 averages over ~100 steps, but a
            zoo epoch is ~12 steps, so the running statistics would trail the weights and every
            validation score would be off; 0.9 is PyTorch's default (its ``momentum=0.1``). It
            does not change inference or what is saved.
        augment: training-time augmentation; :data:`NO_AUGMENT` turns it off.
        log: called with one line per epoch (``print`` for progress).

    Returns:
        ``(model, metrics)``: the inference-mode model (input length fixed to the clips' length)
        and a JSON-serialisable dict with ``train_accuracy``, ``val_accuracy``, ``test_accuracy``,
        ``val_loss``, ``initial_val_accuracy`` and ``initial_val_loss`` (before training),
        ``best_epoch``, ``epochs_run``, ``steps``, ``seconds`` and ``history`` (one
        ``{"epoch", "train_loss", "val_accuracy", "val_loss"}`` per epoch).

    Raises:
        DatasetError: a split is empty or too small for one batch.
        ModelError: ``arch`` is not registered.
    """
    started = time.perf_counter()
    spec = get_architecture(arch)
    train, val, test = (dataset.subset(s) for s in ("train", "val", "test"))
    if len(train) < batch_size or len(val) == 0:
        raise DatasetError(
            f"need at least batch_size={batch_size} training clips and one validation clip; "
            f"got {len(train)} and {len(val)}"
        )
    steps_per_epoch = len(train) // batch_size
    total_steps = steps_per_epoch * epochs
    warmup = int(round(warmup_epochs * steps_per_epoch))
    lr_at = lr_schedule(lr, warmup, total_steps)
    tx = _optimizer(float(weight_decay), float(clip_norm))

    module = spec.build(config, nnx.Rngs(seed))
    if bn_momentum is not None:
        for _, sub in nnx.iter_modules(module):
            if isinstance(sub, nnx.BatchNorm):
                sub.momentum = bn_momentum
    module.train()
    train_def, state = nnx.split(module)
    opt_def, opt_state = nnx.split(nnx.Optimizer(module, tx, wrt=nnx.Param))
    module.eval()
    eval_def = nnx.graphdef(module)

    def logits_fn(state, x):
        return _logits(eval_def, state, x)

    def evaluate(state, split: Dataset) -> tuple[float, float]:
        logits = np.concatenate(
            [np.asarray(logits_fn(state, split.waveforms[i])) for i in _batches(len(split), batch_size)]
        )[: len(split)]
        # NumPy, not eager JAX: eager ops compile once per shape, and the splits differ in size.
        z = logits.astype(np.float64)
        z = z - z.max(-1, keepdims=True)
        nll = np.log(np.exp(z).sum(-1)) - z[np.arange(len(z)), split.labels]
        return float(np.mean(logits.argmax(-1) == split.labels)), float(nll.mean())

    out = jax.eval_shape(logits_fn, state, train.waveforms[:batch_size])
    if out.shape != (batch_size, dataset.num_classes):
        raise DatasetError(
            f"{arch} maps [{batch_size}, T] waveforms to logits of shape {out.shape}; the dataset "
            f"needs [{batch_size}, {dataset.num_classes}]"
        )
    initial_acc, initial_loss = evaluate(state, val)  # the untrained reference
    order_rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    best = (-1.0, -np.inf)
    best_state, best_epoch, history, steps = state, 0, [], 0
    for epoch in range(1, epochs + 1):
        order = order_rng.permutation(len(train))
        losses = []
        for b in range(steps_per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            x, y = train.waveforms[idx], train.labels[idx]
            step_key = jax.random.fold_in(key, steps)
            state, opt_state, loss = _train_step(
                train_def, opt_def, augment, state, opt_state, x, y, step_key, lr_at[steps]
            )
            losses.append(loss)
            steps += 1
        val_acc, val_loss = evaluate(state, val)
        train_loss = float(np.mean(jax.device_get(losses)))
        history.append(
            {"epoch": epoch, "train_loss": train_loss, "val_accuracy": val_acc, "val_loss": val_loss}
        )
        if log is not None:
            log(f"epoch {epoch:3d}  loss {train_loss:.4f}  val acc {val_acc:.3f}  val loss {val_loss:.4f}")
        if (val_acc, -val_loss) > best:
            best, best_state, best_epoch = (val_acc, -val_loss), state, epoch
        elif epoch - best_epoch >= patience:
            break

    model = Model.from_module(
        nnx.merge(eval_def, best_state),
        arch=arch,
        config=config,
        sample_rate=dataset.sample_rate,
        labels=dataset.class_names,
        input=InputPolicy(length=int(dataset.waveforms.shape[1])),
        source={
            "trained_by": "jsuff.app.zoo.train",
            "data_seed": dataset.seed,
            "seed": int(seed),
            "hyperparameters": {
                "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                "warmup_epochs": warmup_epochs, "clip_norm": clip_norm, "patience": patience,
                "bn_momentum": bn_momentum,
                "augment": dataclasses.asdict(augment),
            },
        },
    )
    train_acc, _ = evaluate(best_state, train)
    test_acc = evaluate(best_state, test)[0] if len(test) else None
    metrics = {
        "train_accuracy": train_acc,
        "val_accuracy": best[0],
        "val_loss": -best[1],
        "test_accuracy": test_acc,
        "initial_val_accuracy": initial_acc,
        "initial_val_loss": initial_loss,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "steps": steps,
        "seconds": time.perf_counter() - started,
        "history": history,
    }
    return model, metrics
