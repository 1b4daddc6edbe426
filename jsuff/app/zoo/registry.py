"""The zoo's recipe table and the entry point that trains it (``jsuff zoo train``).

Each :class:`ZooMember` is data: a name, a registered architecture, its config and the keyword
arguments of :func:`jsuff.app.zoo.train.train_model`. :func:`train_zoo` trains every listed member
whose architecture is registered on the generated dataset (:data:`DATA_SEED`,
:data:`N_PER_CLASS`), saves each with :func:`jsuff.models.save_model` under ``<out>/<name>/`` and
records its held-out accuracy in ``<out>/zoo.json``; members whose architecture is not registered
are reported as skipped, with the reason.

Sizing: 5 classes x (80 train, 20 val, 20 test) one-second 16 kHz clips, i.e. 400 training
clips, 12 steps of 32 per epoch (about 3 s to generate). The models are small (tens of thousands
of parameters) and the epoch budgets aim at all four training in about ten minutes on a 2-core
CPU; that is an estimate from their sizes until the families land and ``jsuff zoo train`` times
them (``train_seconds`` in ``zoo.json``).

Configs use each family's own config fields (:mod:`jsuff.models.melcnn`, :mod:`~jsuff.models.rawnet2`,
:mod:`~jsuff.models.ast`, :mod:`~jsuff.models.wav2vec2`), which follow the configs they port
(clovaai/aasist's RawNet2 ``model_config``, transformers' ``ASTConfig`` and ``Wav2Vec2Config``).

Example:
    >>> [m.name for m in ZOO]
    ['melcnn', 'rawnet2', 'ast', 'wav2vec2']
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jsuff._files import write_json
from jsuff.models.base import Model, ModelError, architectures, load_model, save_model
from jsuff.app.zoo.data import CLASS_NAMES, Dataset, make_dataset
from jsuff.app.zoo.train import train_model

__all__ = [
    "DATA_SEED",
    "DURATION",
    "FORMAT_VERSION",
    "N_PER_CLASS",
    "SAMPLE_RATE",
    "ZOO",
    "ZOO_DIR",
    "ZOO_JSON",
    "ZooError",
    "ZooMember",
    "get_member",
    "load_zoo",
    "read_zoo_json",
    "train_zoo",
    "zoo_accuracy",
    "zoo_dataset",
]

ZOO_DIR = Path(__file__).resolve().parent / "models"
ZOO_JSON = "zoo.json"
FORMAT_VERSION = 1

DATA_SEED = 0
N_PER_CLASS = (80, 20, 20)
SAMPLE_RATE = 16000
DURATION = 1.0


class ZooError(ModelError):
    """An unknown zoo member, or no trained zoo where one is expected."""


@dataclasses.dataclass(frozen=True)
class ZooMember:
    """One zoo model's recipe.

    Attributes:
        name: the member's name (its folder under the zoo directory).
        arch: the registered architecture it builds.
        config: the architecture's config (JSON-serialisable).
        train: keyword arguments for :func:`jsuff.app.zoo.train.train_model` (``seed``, ``epochs``,
            ``lr`` ...).
        note: what the member is for, one line.
    """

    name: str
    arch: str
    config: Mapping[str, Any]
    train: Mapping[str, Any]
    note: str = ""


_C = len(CLASS_NAMES)
_LABELS = {str(i): n for i, n in enumerate(CLASS_NAMES)}

# Sized for the demo: every candidate the search evaluates runs all four models, so each must be
# cheap on a 2-core CPU (a few ms per clip) and small on disk (the committed params are a few MB).
ZOO: tuple[ZooMember, ...] = (
    ZooMember(
        name="melcnn",
        arch="melcnn",
        config={
            "num_classes": _C, "sample_rate": SAMPLE_RATE, "n_fft": 512, "hop": 160, "n_mels": 40,
            "channels": [8, 16, 32], "num_samples": int(SAMPLE_RATE * DURATION),
        },
        train={"seed": 0, "epochs": 20, "batch_size": 32, "lr": 3e-3, "patience": 6},
        note="log-mel spectrogram CNN: time-frequency patterns (rhythm and spectrum alike)",
    ),
    ZooMember(
        name="rawnet2",
        arch="rawnet2",
        config={
            # clovaai/aasist's RawNet2 model_config, shrunk: 16 sinc filters, 1 + 1 residual
            # blocks, one small GRU.
            "nb_samp": int(SAMPLE_RATE * DURATION), "first_conv": 129, "sample_rate": SAMPLE_RATE,
            "filts": [16, [16, 16], [16, 24]], "blocks": [1, 1],
            "nb_fc_node": 24, "gru_node": 24, "nb_gru_layer": 1, "nb_classes": _C,
        },
        train={"seed": 0, "epochs": 15, "batch_size": 32, "lr": 3e-3, "patience": 5},
        note="raw-waveform sinc front end + residual blocks + GRU",
    ),
    ZooMember(
        name="ast",
        arch="ast",
        config={
            # transformers ASTConfig field names; 1 s at a 10 ms shift is 98 fbank frames.
            "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 96, "patch_size": 16, "frequency_stride": 12,
            "time_stride": 12, "max_length": 100, "num_mel_bins": 64, "num_labels": _C,
            "sample_rate": SAMPLE_RATE,
        },
        train={"seed": 0, "epochs": 20, "batch_size": 32, "lr": 2e-3, "patience": 6},
        note="patch transformer over a Kaldi log-mel fbank",
    ),
    ZooMember(
        name="wav2vec2",
        arch="wav2vec2",
        config={
            # transformers Wav2Vec2Config field names; strides 5*4*4*2 = 160 samples (10 ms) a frame.
            "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 96, "conv_dim": [24, 24, 32, 32], "conv_stride": [5, 4, 4, 2],
            "conv_kernel": [10, 8, 4, 2], "feat_extract_norm": "group",
            "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
            "classifier_proj_size": 32, "num_labels": _C,
        },
        train={"seed": 0, "epochs": 20, "batch_size": 32, "lr": 2e-3, "patience": 6},
        note="conv feature encoder + transformer on the raw waveform",
    ),
)


def get_member(name: str, members: Sequence[ZooMember] = ZOO) -> ZooMember:
    """The member called ``name``; :class:`ZooError` lists the known ones otherwise."""
    for m in members:
        if m.name == name:
            return m
    raise ZooError(f"unknown zoo member {name!r}; known: {', '.join(m.name for m in members)}")


def zoo_dataset() -> Dataset:
    """The generated dataset every zoo member trains and is scored on."""
    return make_dataset(DATA_SEED, N_PER_CLASS, sample_rate=SAMPLE_RATE, duration=DURATION)


def _versions() -> dict[str, str]:
    import flax
    import jax
    import optax

    return {
        "jax_version": jax.__version__,
        "flax_version": flax.__version__,
        "optax_version": optax.__version__,
    }


def read_zoo_json(directory: str | os.PathLike | None = None) -> dict[str, Any]:
    """The zoo's ``zoo.json`` as a dict; :class:`ZooError` when there is none."""
    path = Path(directory or ZOO_DIR) / ZOO_JSON
    if not path.is_file():
        raise ZooError(f"no trained zoo at {path.parent} (no {ZOO_JSON}); run `jsuff zoo train`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ZooError(f"{path} is not valid JSON: {e}") from None


def train_zoo(
    out: str | os.PathLike | None = None,
    *,
    only: Sequence[str] | None = None,
    members: Sequence[ZooMember] = ZOO,
    dataset: Dataset | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train the zoo (or the members in ``only``), save each model and record it in ``zoo.json``.

    Records already in ``zoo.json`` for members not trained now are kept, so ``only`` refreshes
    one member at a time.

    Args:
        out: the zoo directory (default: the package's ``jsuff/app/zoo/models``).
        only: member names to train (default: all).
        members: the recipe table (default :data:`ZOO`).
        dataset: the data (default :func:`zoo_dataset`); tests pass a small one.
        log: progress lines (``print`` from the CLI).

    Returns:
        ``{"trained": {name: record}, "skipped": {name: reason}}``.

    Raises:
        ZooError: a name in ``only`` is not a member.
    """
    say = log or (lambda _: None)
    chosen = [get_member(n, members) for n in only] if only else list(members)
    registered = architectures()
    root = Path(out or ZOO_DIR)
    trained: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    todo = []
    for m in chosen:
        if m.arch in registered:
            todo.append(m)
        else:
            skipped[m.name] = f"architecture {m.arch!r} is not registered (its family is not installed)"
            say(f"skip {m.name}: {skipped[m.name]}")
    if not todo:
        return {"trained": trained, "skipped": skipped}
    if dataset is None:
        say(f"generating the dataset (seed {DATA_SEED}, {N_PER_CLASS} clips per class)")
        dataset = zoo_dataset()
    root.mkdir(parents=True, exist_ok=True)
    try:
        record = read_zoo_json(root)
    except ZooError:
        record = {}
    record.update(
        format_version=FORMAT_VERSION,
        data={
            "seed": dataset.seed,
            "train_val_test": [int((dataset.split == s).sum()) for s in range(3)],
            "sample_rate": dataset.sample_rate,
            "num_samples": int(dataset.waveforms.shape[1]),
            "classes": list(dataset.class_names),
        },
    )
    record.setdefault("members", {})
    for m in todo:
        say(f"train {m.name} ({m.arch})")
        model, metrics = train_model(m.arch, m.config, dataset, log=say, **m.train)
        save_model(model, root / m.name, overwrite=True)
        entry = {
            "name": m.name,
            "arch": m.arch,
            "path": m.name,
            "test_accuracy": metrics["test_accuracy"],
            "val_accuracy": metrics["val_accuracy"],
            "train_accuracy": metrics["train_accuracy"],
            "best_epoch": metrics["best_epoch"],
            "epochs_run": metrics["epochs_run"],
            "train_seconds": round(metrics["seconds"], 1),
            "seed": int(m.train.get("seed", 0)),
            "data_seed": dataset.seed,
            **_versions(),
        }
        record["members"][m.name] = entry
        write_json(root / ZOO_JSON, record)  # after each member: a crash keeps the others
        trained[m.name] = entry
        say(f"{m.name}: test accuracy {entry['test_accuracy']:.3f} ({entry['train_seconds']} s)")
    return {"trained": trained, "skipped": skipped}


def load_zoo(
    directory: str | os.PathLike | None = None, names: Sequence[str] | None = None
) -> dict[str, Model]:
    """The trained zoo models recorded in ``zoo.json``, by member name.

    Args:
        directory: the zoo directory (default: the package's ``jsuff/app/zoo/models``).
        names: only these members (default: every recorded one).

    Raises:
        ZooError: no ``zoo.json``, or a requested member that it does not record.
        ModelError: a recorded model directory that cannot be loaded (the reason is named).

    Example:
        >>> models = load_zoo(names=["melcnn"])
        >>> models["melcnn"].labels, models["melcnn"].sample_rate
        (('pulse', 'bright', 'low', 'chord', 'hiss'), 16000)
    """
    root = Path(directory or ZOO_DIR)
    recorded = read_zoo_json(root).get("members", {})
    wanted = list(names) if names is not None else sorted(recorded)
    missing = [n for n in wanted if n not in recorded]
    if missing:
        raise ZooError(
            f"{root / ZOO_JSON} records no member {', '.join(map(repr, missing))}; "
            f"it has: {', '.join(sorted(recorded)) or '(none)'}"
        )
    return {n: load_model(root / recorded[n].get("path", n)) for n in wanted}


def zoo_accuracy(directory: str | os.PathLike | None = None) -> dict[str, float]:
    """Each recorded member's held-out (test split) accuracy, from ``zoo.json``.

    Example:
        >>> sorted(zoo_accuracy())
        ['ast', 'melcnn', 'rawnet2', 'wav2vec2']
        >>> all(0.0 <= a <= 1.0 for a in zoo_accuracy().values())
        True
    """
    members = read_zoo_json(directory).get("members", {})
    return {n: float(r["test_accuracy"]) for n, r in sorted(members.items())}
