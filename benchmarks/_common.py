"""Helpers shared by the benchmark scripts: models, clips, timing, the machine, and writing results.

Every script builds its models here so that "the same model" means the same thing everywhere:

* ``bandpower``: the toy read-out of band energies (cheap; used where clip length must reach 30 s);
* ``wav2vec2-<size>`` / ``hubert-<size>`` / ``wavlm-<size>``: a transformers model built from a config with seeded
  random weights, saved with ``save_pretrained`` and converted through ``converters.convert``
  (the public path), sizes from :data:`W2V2_SIZES` (``tiny``, ``mini``, ``small``, ``base``);
* ``ast-<size>``: the same for the Audio Spectrogram Transformer (``tiny``, ``small``);
* ``zoo:<member>``: a trained zoo model (``zoo:melcnn``, ``zoo:rawnet2``, ``zoo:ast``,
  ``zoo:wav2vec2``, :mod:`jsuff.app.zoo`), with :func:`zoo_clips` from its test split;
* ``speech:<name>``: a real speech detector of the realdemo's speech study (``speech:silero_jit``,
  ``silero_st``, ``javad_tiny``, ``pulsevad_2k``, ``pulsevad_81k``), converted from its installed
  wheel into ``benchmarks/results/models/``, with :func:`speech_clips` (the study's clips).

Random weights are enough to time things; the zoo and the speech detectors are trained, so their
explanations also say something about the models.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.model_throughput import SAMPLE_RATE, W2V2_SIZES as _THROUGHPUT_SIZES
from benchmarks.model_throughput import environment as _environment

RESULTS = Path(__file__).resolve().parent / "results"

#: wav2vec2 / HuBERT config overrides by size: model_throughput's sizes plus "mini" (2 layers of
#: 128, three 64-channel convs: a per-call cost between the test model and the base widths).
W2V2_SIZES: dict[str, dict[str, Any]] = {
    **_THROUGHPUT_SIZES,
    "mini": dict(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        conv_dim=(64, 64, 64), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
        num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=4, classifier_proj_size=32,
    ),
}

#: AST config overrides by size (the fbank front end is the published one; the encoder shrinks).
AST_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_length=100, frequency_stride=10, time_stride=10,
    ),
    "small": dict(num_hidden_layers=2, max_length=100),
}

NUM_LABELS = 10

# transformers (config, classifier) classes of the families built at the W2V2_SIZES sizes.
_W2V2_CLASSES: dict[str, tuple[str, str]] = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2ForSequenceClassification"),
    "hubert": ("HubertConfig", "HubertForSequenceClassification"),
    "wavlm": ("WavLMConfig", "WavLMForSequenceClassification"),
}


@dataclasses.dataclass(frozen=True)
class BenchModel:
    """A model ready to time: the jsuff model, and (for converted models) the PyTorch one.

    Attributes:
        name: e.g. ``"wav2vec2-tiny"``.
        model: the :class:`jsuff.models.Model`.
        torch_model: the transformers model in eval mode (None for ``bandpower``).
        torch_inputs: ``torch_inputs(waveforms[B, T]) -> kwargs`` of the transformers forward
            (its feature extractor, in NumPy/PyTorch), None for ``bandpower``.
    """

    name: str
    model: Any
    torch_model: Any = None
    torch_inputs: Callable[[np.ndarray], dict[str, Any]] | None = None


def model_names() -> list[str]:
    from jsuff.app.realdemo import SPEECH_MODELS
    from jsuff.app.zoo import ZOO

    return (
        ["bandpower"]
        + [f"{f}-{s}" for f in _W2V2_CLASSES for s in W2V2_SIZES]
        + [f"ast-{s}" for s in AST_SIZES]
        + [f"zoo:{m.name}" for m in ZOO]
        + [f"speech:{n}" for n in SPEECH_MODELS]
    )


def bandpower(sample_rate: int = SAMPLE_RATE, bands: int = NUM_LABELS) -> BenchModel:
    """The toy band-energy classifier, ``bands`` log-spaced bands from 50 Hz to Nyquist."""
    from jsuff.models import build_model

    edges = np.geomspace(50.0, sample_rate / 2, bands + 1)
    config = {"sample_rate": sample_rate, "bands": [[float(a), float(b)] for a, b in zip(edges[:-1], edges[1:])]}
    model = build_model("bandpower", config, sample_rate=sample_rate, labels=[f"band{i}" for i in range(bands)])
    return BenchModel("bandpower", model)


def build(name: str) -> BenchModel:
    """A :class:`BenchModel` by name (see :func:`model_names`)."""
    if name == "bandpower":
        return bandpower()
    if name.startswith("zoo:"):
        from jsuff.app.zoo import load_zoo

        member = name.removeprefix("zoo:")
        return BenchModel(name, load_zoo(names=[member])[member])
    if name.startswith("speech:"):
        from jsuff.app.realdemo import SPEECH_MODELS, convert_models

        short = name.removeprefix("speech:")
        if short not in SPEECH_MODELS:
            raise ValueError(f"unknown speech detector {short!r}; choose from {sorted(SPEECH_MODELS)}")
        from jsuff.models import load_model

        (path,) = convert_models([(short, SPEECH_MODELS[short])], RESULTS / "models")
        return BenchModel(name, load_model(path))
    family, _, size = name.partition("-")
    if family in _W2V2_CLASSES and size in W2V2_SIZES:
        return _converted(name, *_W2V2_CLASSES[family], W2V2_SIZES[size], _w2v2_inputs)
    if family == "ast" and size in AST_SIZES:
        return _converted(name, "ASTConfig", "ASTForAudioClassification", AST_SIZES[size], _ast_inputs)
    raise ValueError(f"unknown benchmark model {name!r}; choose from {model_names()}")


def _converted(name: str, config_cls: str, model_cls: str, overrides: dict[str, Any], inputs: Callable) -> BenchModel:
    import torch
    import transformers

    from converters import convert

    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**overrides, num_labels=NUM_LABELS)
    torch_model = getattr(transformers, model_cls)(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch_model.save_pretrained(folder)
        if config_cls == "ASTConfig":
            extractor = transformers.ASTFeatureExtractor(max_length=config.max_length)
        else:
            extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)
        extractor.save_pretrained(folder)
        model = convert(folder, None)
    return BenchModel(name, model, torch_model, lambda w: inputs(extractor, w))


def _w2v2_inputs(extractor: Any, waveforms: np.ndarray) -> dict[str, Any]:
    return {"input_values": extractor(list(waveforms), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values}


def _ast_inputs(extractor: Any, waveforms: np.ndarray) -> dict[str, Any]:
    return {"input_values": extractor(list(waveforms), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values}


def clip(seed: int, seconds: float = 1.0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A deterministic test clip: three tones (random frequencies, amplitudes) plus light noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    x = sum(
        a * np.sin(2 * np.pi * f * t + p)
        for f, a, p in zip(rng.uniform(80, sample_rate / 2.5, 3), rng.uniform(0.1, 0.5, 3), rng.uniform(0, 6.3, 3))
    )
    return (x + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def top1(apply_fn: Callable, params: Any, waveforms: Any) -> np.ndarray:
    """The model's label on each waveform (a one-logit model read as binary, as jsuff does)."""
    from jsuff.evaluate import class_logits, predict

    return np.asarray(class_logits(predict(apply_fn, params, waveforms, batch=16))).argmax(-1)


def _not_trivial(model: Any, named: list[tuple[str, np.ndarray]], n: int, *, exact: bool = True
                 ) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` clips whose label differs from the empty signal's (silence: with everything
    removed an rfft clip is all zeros), else the explanation is trivial; fewer only when not
    ``exact``."""
    empty = top1(model.apply, model.params, np.zeros((1, named[0][1].size), np.float32))[0]
    labels = top1(model.apply, model.params, np.stack([x for _, x in named]))
    out = [c for c, lab in zip(named, labels) if lab != empty][:n]
    if exact and len(out) < n:
        raise RuntimeError(f"only {len(out)} of {len(named)} clips get a label other than the empty signal's")
    return out


def zoo_clips(model: Any, n: int) -> list[tuple[str, np.ndarray]]:
    """``(name, waveform)`` of the first ``n`` clips of the zoo's test split (clip index, then
    class, as :func:`jsuff.app.zoo.make_dataset` orders them) whose label differs from the empty
    signal's."""
    from jsuff.app.zoo.data import CLASS_NAMES, make_clip
    from jsuff.app.zoo.registry import DATA_SEED, N_PER_CLASS

    test = [
        (f"test_{i:02d}_{c}", make_clip(c, np.random.default_rng([DATA_SEED, 2, ci, i])))
        for i in range(N_PER_CLASS[2]) for ci, c in enumerate(CLASS_NAMES)
    ]
    return _not_trivial(model, test, n)


def speech_task() -> tuple[Path, Any]:
    """The realdemo's speech task (its clips, made once under ``benchmarks/results/speech_data``
    with espeak-ng) and its default config."""
    from jsuff.app.realdemo import RealDemoConfig, make_speech_task

    cfg = RealDemoConfig()
    folder = RESULTS / "speech_data"
    manifest = folder / "manifest.csv"
    if not manifest.exists():
        make_speech_task(folder, n_speech=cfg.n_speech, n_nonspeech=cfg.n_nonspeech, duration=cfg.speech_duration,
                         seed=cfg.seed)
    return manifest, cfg


def speech_clips(model: Any, n: int) -> list[tuple[str, np.ndarray]]:
    """``(name, waveform)`` of the speech study's clips whose label differs from the empty signal's
    (the speech clips: every detector says ``no_speech`` to silence), at most ``n``."""
    from jsuff.audio import load_audio

    manifest, _ = speech_task()
    rows = [line.split(",")[0] for line in manifest.read_text().splitlines()[1:]]
    named = [(r, load_audio(manifest.parent / r)[0]) for r in rows]
    return _not_trivial(model, named, n, exact=False)


def counting(apply_fn: Callable) -> tuple[Callable, list[int]]:
    """``apply_fn`` that also adds the rows of every call it makes to ``counter[0]`` as the call
    runs (a host callback), padding included: the rows the model really evaluated. A new function
    object, so it compiles apart from ``apply_fn``; for counting, not for timing."""
    import jax

    counter = [0]

    def add(rows: Any) -> None:
        counter[0] += int(rows)

    def counted(params: Any, x: Any) -> Any:
        jax.debug.callback(add, x.shape[0])
        return apply_fn(params, x)

    return counted, counter


def candidates(seconds: float, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A test clip ``[T]`` and ``batch`` random keep-masks over its rfft grid (mixed densities)."""
    x = clip(seed, seconds)
    rng = np.random.default_rng(seed)
    masks = rng.uniform(size=(batch, x.size // 2 + 1)) < rng.uniform(0.05, 0.95, size=(batch, 1))
    return x, masks


def candidate_logits(
    model: Any, x: np.ndarray, masks: np.ndarray, compute_dtype: str = "float32"
) -> tuple[float, Callable[[], Any], Any]:
    """Compile the search's candidate evaluation (``jsuff.evaluate.masked_logits``: masks, rfft
    synthesis, the model) for one batch; returns ``(compile_s, run, compiled)`` where ``run()``
    gives the float32 logits ``[B, C]``, ready (``block_until_ready``), and ``compiled`` is the
    XLA executable (for ``cost_analysis()``)."""
    import jax
    import jax.numpy as jnp

    from jsuff.domains import RFFT
    from jsuff.evaluate import masked_logits

    coeffs = jax.vmap(RFFT().analyze)(jnp.asarray(x)[None])
    jm = jnp.asarray(masks)

    def logits(params: Any, coeffs: Any, masks: jax.Array) -> jax.Array:
        clip_of = jnp.zeros(masks.shape[0], jnp.int32)
        return masked_logits(model.apply, params, RFFT(), coeffs, clip_of, masks, compute_dtype=compute_dtype)

    compile_s, compiled = timed(lambda: jax.jit(logits).lower(model.params, coeffs, jm).compile())
    return compile_s, lambda: compiled(model.params, coeffs, jm).block_until_ready(), compiled


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, result)`` of one call (call ``block_until_ready`` inside ``fn`` for JAX work)."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    return statistics.median(timed(fn)[0] for _ in range(repeats))


def max_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def environment() -> dict[str, Any]:
    """Devices and versions (model_throughput's record) plus the load average and device count."""
    import jax

    try:
        env = _environment()
    except ImportError:  # an accelerator machine without the PyTorch side: record jax alone
        env = {"jax_backend": jax.default_backend(), "jax_device": str(jax.devices()[0].device_kind),
               "jax": jax.__version__, "cpu_count": os.cpu_count()}
    env["jax_device_count"] = jax.device_count()
    env["loadavg_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    return env


def print_env(env: dict[str, Any]) -> None:
    print(" ".join(f"{k}={v}" for k, v in env.items()), flush=True)


def print_row(row: dict[str, Any], keys: list[str] | None = None) -> None:
    """One ``key=value`` line per result row as it comes (floats to 4 significant digits)."""
    keys = list(row) if keys is None else [k for k in keys if k in row]
    print(" ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keys), flush=True)


def run_models(names: str, run: Callable[[str], dict[str, Any]], columns: list[str], out: Path,
               settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Record the machine, ``run`` each comma-separated model name (a line per row as it comes),
    print the ``columns`` table and write the results; returns the rows."""
    env = environment()
    print_env(env)
    rows = []
    for name in names.split(","):
        rows.append(run(name))
        print_row(rows[-1])
    print()
    print_table(rows, columns)
    write_results(out, env, rows, settings={k: str(v) for k, v in settings.items()})
    return rows


def write_results(out: Path, env: dict[str, Any], rows: list[dict[str, Any]], **extra: Any) -> None:
    """``out`` as JSON ``{"environment", "rows", **extra}`` and the rows as CSV beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": env, **extra, "rows": rows}, indent=2, default=str) + "\n")
    fields = list(dict.fromkeys(k for r in rows for k in r)) or ["empty"]
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out} and {out.with_suffix('.csv').name}")


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain fixed-width table of ``columns`` (floats to 4 significant digits)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)), flush=True)
