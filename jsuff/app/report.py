"""Figures, listening files and HTML pages for a study directory: a self-contained report folder.

``write_report(study_dir)`` reads what :func:`jsuff.app.study.run_study` wrote and produces, under
``study_dir/report/``:

* ``index.html``: the study's settings (seed, domain, search, clip duration ...), the software
  versions and run time, the tables with a definition of every column, the summary figures, a
  list of every clip, and per model the first ``max_clips`` clips with a verified sufficient
  signal as cards (true label, label, the original and the sufficient signal to play, figure);
* ``models/<slug>.html``: every clip of one model (``<slug>``: the model's folder name in the
  study, :func:`jsuff.app.store.model_slugs`);
* ``clips/clip_NNNN.html``: one clip across all models: its original and each model's sufficient
  signal side by side, and who accepts whose (which label every model gives every model's
  sufficient signal);
* ``figures/*.png``: the summary figures (transfer matrix with n and intervals, incoming and
  outgoing rates with flat-earther flags, mutual information beside accuracy) and one figure per
  shown (model, clip) in the study's domain, with that domain's own settings and axes in seconds
  and Hz;
* ``audio/original/clip_NNNN.wav`` (at the study rate) and ``audio/<slug>/clip_NNNN_sufficient.wav``
  (at the model's rate): what the models heard.

The folder is self-contained: the index embeds its figures, the other pages link files inside the
folder, and every link is relative, so the folder can be copied or zipped as a whole. Every user
string on the pages (task, model and class names, file names, paths, failure reasons) is escaped
for its HTML context by the templates' autoescape; every file is written atomically.

Example:
    >>> write_report("runs/genre")     # needs a finished study folder  # doctest: +SKIP
    PosixPath('runs/genre/report/index.html')
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import numpy as np
from markupsafe import Markup

from jsuff._files import FolderLockedError, WriteError, atomic_write, folder_lock, write_text
from jsuff.app.config import StudyError
from jsuff.app.data import unknown_classes
from jsuff.app.store import StudyArrays, iter_explanations, load_arrays, load_npz, study_record
from jsuff.app.tables import read_tables
from jsuff.app.versions import software_versions
from jsuff.audio import write_wav
from jsuff.domains import RFFT, STFT, Domain, Time, get_domain

__all__ = [
    "MAX_CLIPS_PER_MODEL",
    "ONE_MODEL_NOTE",
    "clip_figure",
    "column_definitions",
    "draw_clip_figure",
    "format_number",
    "html_table",
    "info_figure",
    "label_view_frame",
    "rates_figure",
    "summary_text",
    "transfer_figure",
    "write_report",
]

#: Clips per model shown as cards (with a figure) on the index page; every clip is on the
#: model's and the clip's own pages.
MAX_CLIPS_PER_MODEL = 6

#: What the console and the report say when a study has one model (``{name}``: its name).
ONE_MODEL_NOTE = (
    "Transfer needs at least two models: this study has one ({name}), so there is no transfer "
    "matrix, no transfer rates and no information between models. Its accuracy and its "
    "sufficient signals are reported; add a second model to the config's `models` to measure transfer."
)


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain(text: str) -> str:
    """``text`` shown literally by matplotlib (a ``$`` in a name would start mathtext)."""
    return str(text).replace("$", r"\$")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _mpl().close(fig)
    return buf.getvalue()


def format_number(v: float, digits: int = 3) -> str:
    """``v`` with ``digits`` decimals, never ``-0.000`` (a tiny negative rounding error is 0)."""
    s = f"{v:.{digits}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


# ----------------------------------------------------------------------------------------------
# Figures (each returns PNG bytes)
# ----------------------------------------------------------------------------------------------


def _pivot(pairs: Any, names: Sequence[str], col: str) -> np.ndarray:
    mat = np.full((len(names), len(names)), np.nan)
    for _, r in pairs.iterrows():
        mat[names.index(r["source"]), names.index(r["target"])] = r[col]
    return mat


def transfer_figure(pairs: Any, names: Sequence[str], title: str) -> bytes:
    """Heatmap of T[f, g] with each cell's rate, interval and n."""
    plt = _mpl()
    rate = _pivot(pairs, names, "rate")
    lo = _pivot(pairs, names, "lo")
    hi = _pivot(pairs, names, "hi")
    cnt = _pivot(pairs, names, "n")
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * k, 1.2 + 1.1 * k))
    im = ax.imshow(rate, vmin=0, vmax=1, cmap="viridis")
    for f in range(k):
        for g in range(k):
            if np.isnan(rate[f, g]):
                ax.text(g, f, "n=0", ha="center", va="center", fontsize=7, color="gray")
                continue
            txt = f"{rate[f, g]:.2f}\n[{lo[f, g]:.2f},{hi[f, g]:.2f}]\nn={int(cnt[f, g])}"
            ax.text(g, f, txt, ha="center", va="center", fontsize=7, color="white" if rate[f, g] < 0.6 else "black")
    ax.set_xticks(range(k), [_plain(n) for n in names], rotation=35, ha="right")
    ax.set_yticks(range(k), [_plain(n) for n in names])
    ax.set_xlabel("listener g (plays f's sufficient signal)")
    ax.set_ylabel("source f (whose sufficient signal)")
    ax.set_title(_plain(title))
    fig.colorbar(im, ax=ax, fraction=0.046, label="T(f→g)")
    return _png(fig)


def rates_figure(models: Any, flags: Any | None) -> bytes:
    """Incoming and outgoing transfer rates per model with intervals; flagged models marked."""
    plt = _mpl()
    names = list(models["model"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(2 + 1.1 * len(names), 3.6))
    for off, kind, color in ((-0.2, "outgoing", "tab:blue"), (0.2, "incoming", "tab:orange")):
        v = models[kind].to_numpy(float)
        err = np.abs(np.stack([v - models[f"{kind}_lo"].to_numpy(float), models[f"{kind}_hi"].to_numpy(float) - v]))
        ax.bar(x + off, v, 0.4, yerr=np.nan_to_num(err), capsize=3, label=kind, color=color)
    flagged: set[str] = set()
    if flags is not None and "flat_earther" in flags:
        flagged = set(flags.loc[flags["flat_earther"].astype(bool), "model"])
    ax.set_xticks(x, [_plain(f"{n} (flat-earther)" if n in flagged else n) for n in names], rotation=30, ha="right")
    for tick, n in zip(ax.get_xticklabels(), names):
        if n in flagged:
            tick.set_color("crimson")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("transfer rate")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
    ax.set_title("outgoing (others accept f's signals) / incoming (f accepts others')")
    return _png(fig)


def info_figure(info: Any, metrics: Any | None) -> bytes:
    """Per model: accuracy beside the mutual information its sufficient signals carry."""
    plt = _mpl()
    names = list(dict.fromkeys(info["source"]))
    mi_col = "mi_source"
    mi_true = "mi_true" if "mi_true" in info else None
    fig, ax = plt.subplots(figsize=(2 + 1.2 * len(names), 3.6))
    x = np.arange(len(names))
    series: list[tuple[str, np.ndarray]] = []
    if metrics is not None:
        acc = metrics.set_index("model").reindex(names)["accuracy"].to_numpy(float)
        series.append(("accuracy (original clips)", acc))
    off_diag = info[info["source"] != info["target"]]
    series.append(("mean I(c_f(x); c_g(x_S^f)) over g≠f [bits]", off_diag.groupby("source")[mi_col].mean().reindex(names).to_numpy(float)))
    if mi_true:
        series.append(("mean I(y; c_g(x_S^f)) over g≠f [bits]", off_diag.groupby("source")[mi_true].mean().reindex(names).to_numpy(float)))
    w = 0.8 / len(series)
    for j, (lab, v) in enumerate(series):
        ax.bar(x - 0.4 + w * (j + 0.5), v, w, label=lab)
    ax.set_xticks(x, [_plain(n) for n in names], rotation=30, ha="right")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=1, frameon=False)
    ax.set_title("what accuracy shows beside what mutual information shows")
    return _png(fig)


def clip_figure(
    waveform: np.ndarray,
    mask: np.ndarray,
    responsibility: np.ndarray,
    sample_rate: int,
    title: str,
    *,
    domain: Domain,
) -> bytes:
    """One explanation in its own domain, drawn with that domain's settings.

    * ``rfft``: the clip's spectrum (dB) with the kept bins, the kept bins, and the responsibility,
      over frequency in Hz;
    * ``stft``: the clip's spectrogram (the domain's ``n_fft``, ``hop`` and ``window``), the kept
      tiles of it, and the responsibility map, time in seconds by frequency in Hz;
    * ``time``: the clip's waveform (amplitude) with the sufficient signal and its kept segments,
      and the responsibility per segment, over time in seconds.

    Args:
        waveform: ``[T]``: the clip as the model heard it (its rate and length).
        mask, responsibility: ``[*grid]`` of ``domain`` for ``T`` samples.
        sample_rate: the model's rate.
        title: the figure's title (shown literally).
        domain: the explanation's domain.

    Raises:
        ValueError: the mask does not fit the domain's grid for ``T`` samples.
    """
    return _png(draw_clip_figure(waveform, mask, responsibility, sample_rate, title, domain))


def draw_clip_figure(waveform: np.ndarray, mask: np.ndarray, responsibility: np.ndarray, sample_rate: int,
                     title: str, domain: Domain) -> Any:
    """:func:`clip_figure` as a matplotlib figure (to draw on further or read its axes)."""
    x = np.asarray(waveform, np.float32)
    grid = tuple(domain.grid_shape(x.shape[0]))
    if tuple(mask.shape) != grid or tuple(responsibility.shape) != grid:
        raise ValueError(
            f"the mask {tuple(mask.shape)} and responsibility {tuple(responsibility.shape)} do not fit the "
            f"{domain.name} grid {grid} of a {x.shape[0]}-sample clip"
        )
    mask = np.asarray(mask, bool)
    resp = np.asarray(responsibility, np.float32)
    if isinstance(domain, STFT):
        return _stft_fig(x, mask, resp, sample_rate, title, domain)
    if isinstance(domain, Time):
        return _time_fig(x, mask, resp, sample_rate, title, domain)
    if isinstance(domain, RFFT):
        return _rfft_fig(x, mask, resp, sample_rate, title)
    raise ValueError(f"no figure for the {domain.name!r} domain")


def _db(a: np.ndarray) -> np.ndarray:
    return 20 * np.log10(np.abs(a) + 1e-9)


def _rfft_fig(x: np.ndarray, mask: np.ndarray, resp: np.ndarray, sr: int, title: str) -> Any:
    plt = _mpl()
    freqs = np.fft.rfftfreq(x.shape[0], 1.0 / sr)
    mag = _db(np.fft.rfft(x))
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 6.2), sharex=True, height_ratios=(2, 0.7, 1.3))
    axes[0].plot(freqs, mag, lw=0.5, color="0.6", label="clip")
    axes[0].plot(freqs, np.where(mask, mag, np.nan), lw=0.8, color="tab:green", label="kept bins")
    axes[0].set_ylabel("magnitude (dB)")
    axes[0].legend(fontsize=7, loc="upper right")
    axes[1].fill_between(freqs, 0, mask.astype(float), step="mid", color="tab:green", lw=0)
    axes[1].set_ylim(0, 1.05)
    axes[1].set_yticks([0, 1], ["removed", "kept"])
    axes[2].plot(freqs, resp, lw=0.6, color="tab:purple")
    axes[2].set_ylabel("responsibility")
    axes[2].set_xlabel("frequency (Hz)")
    axes[2].set_xlim(0, sr / 2)
    axes[0].set_title(_plain(f"{title}\nrfft of the whole clip: {mask.size} bins, {sr / x.shape[0]:.3g} Hz apart"), fontsize=9)
    fig.tight_layout()
    return fig


def _stft_fig(x: np.ndarray, mask: np.ndarray, resp: np.ndarray, sr: int, title: str, domain: STFT) -> Any:
    plt = _mpl()
    values = np.asarray(domain.analyze(x).values)  # [bins, frames]
    bins, frames = values.shape
    # frame k is centred on sample k * hop (the clip is padded by n_fft // 2); bin j is j * sr / n_fft Hz
    dt, df = domain.hop / sr, sr / domain.n_fft
    extent = (-dt / 2, (frames - 0.5) * dt, -df / 2, (bins - 0.5) * df)
    mag = _db(values)
    lo = float(mag.max()) - 80.0
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 8.0), sharex=True, sharey=True)
    kw = dict(aspect="auto", origin="lower", extent=extent, interpolation="nearest")
    im0 = axes[0].imshow(mag, cmap="magma", vmin=lo, **kw)
    axes[0].set_ylabel("frequency (Hz)")
    axes[0].set_title("clip", fontsize=8, loc="left")
    axes[1].set_facecolor("0.85")
    axes[1].imshow(np.ma.masked_where(~mask, mag), cmap="magma", vmin=lo, vmax=float(mag.max()), **kw)
    axes[1].set_ylabel("frequency (Hz)")
    axes[1].set_title(f"kept tiles ({int(mask.sum())} of {mask.size}; grey: removed)", fontsize=8, loc="left")
    im2 = axes[2].imshow(resp, cmap="viridis", **kw)
    axes[2].set_ylabel("frequency (Hz)")
    axes[2].set_title("responsibility", fontsize=8, loc="left")
    axes[2].set_xlabel("time (s)")
    fig.colorbar(im0, ax=axes[:2], fraction=0.03, label="magnitude (dB)")
    fig.colorbar(im2, ax=axes[2], fraction=0.03, label="responsibility")
    fig.suptitle(
        _plain(f"{title}\nSTFT n_fft={domain.n_fft} ({1000 * domain.n_fft / sr:.3g} ms), hop={domain.hop} "
               f"({1000 * dt:.3g} ms), {domain.window} window: {bins} bins × {frames} frames"),
        fontsize=9,
    )
    return fig


def _time_fig(x: np.ndarray, mask: np.ndarray, resp: np.ndarray, sr: int, title: str, domain: Time) -> Any:
    import jax.numpy as jnp

    plt = _mpl()
    suff = np.asarray(domain.synthesize(domain.analyze(jnp.asarray(x)), jnp.asarray(mask)))
    t = np.arange(x.shape[0]) / sr
    seg = domain.segment / sr
    edges = np.arange(mask.size + 1) * seg
    fig, axes = plt.subplots(2, 1, figsize=(7.5, 4.8), sharex=True, height_ratios=(2, 1))
    for start, stop in _runs(mask):
        axes[0].axvspan(edges[start], min(edges[stop], t[-1]), color="tab:green", alpha=0.15, lw=0)
    axes[0].plot(t, x, lw=0.5, color="0.6", label="clip")
    axes[0].plot(t, suff, lw=0.6, color="tab:green", label="sufficient signal (shaded: kept segments)")
    axes[0].set_ylabel("amplitude")
    axes[0].legend(fontsize=7, loc="upper right")
    axes[1].stairs(resp, edges, color="tab:purple")
    axes[1].set_ylabel("responsibility")
    axes[1].set_xlabel("time (s)")
    axes[1].set_xlim(0, x.shape[0] / sr)
    axes[0].set_title(
        _plain(f"{title}\ntime segments of {domain.segment} samples ({1000 * seg:.3g} ms): {int(mask.sum())} of {mask.size} kept"),
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True in a 1-D mask."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


# ----------------------------------------------------------------------------------------------
# What every column means
# ----------------------------------------------------------------------------------------------

# (the columns, as a regular expression; how they read; the definition). A column that matches no
# entry is a column nobody explained: tests/test_report.py checks every column of a study's tables.
_DEFINITIONS: tuple[tuple[str, str, str], ...] = (
    ("source|target", "source, target",
     "f, the model whose sufficient signal is played, and g, the model that listens to it (the rows and columns of the transfer matrix)."),
    ("self", "self", "True on the diagonal (f = g): a model hearing its own sufficient signal. Task means and rates leave it out."),
    ("model", "model", "the model (its name in the study config)."),
    ("rate", "rate",
     "T(f→g): of f's valid source clips (verified sufficient signal, known true label), the share on which g gives f's label to f's sufficient signal."),
    ("(.+_)?(lo|hi)", "lo, hi, …_lo, …_hi",
     "the lower and upper ends of the 95% confidence interval of the value they follow (rate, mean, outgoing, accuracy, mi …): "
     "percentile bootstrap over clips with the study's n_boot resamples, unless an interval column names another method."),
    ("(.+_)?n", "n, …_n", "how many clips (or, for label_n, labels) the value next to it is computed from."),
    ("agree_.+", "agree_…",
     "the same statistic over only the clips on which the listener g already agrees with f on the original clip."),
    ("correct_.+", "correct_…", "the same statistic over only the clips that f classifies correctly (needs true labels)."),
    ("condition", "condition", "which clips a task mean counts: all (every valid source clip), agree (g agrees with f on the original clip), correct (f is right on the original clip)."),
    ("mean", "mean", "the task mean: the unweighted mean of T(f→g) over the ordered pairs f ≠ g that have data."),
    ("pairs", "pairs", "how many ordered pairs f ≠ g the task mean averages."),
    ("signals", "signals", "clips for which the model has a verified sufficient signal (its valid source clips)."),
    ("self_rate", "self_rate", "T(f→f): the model on its own sufficient signals (1 when every signal was verified)."),
    ("(agree_|correct_)?outgoing", "outgoing", "the mean of T(f→g) over the other models g: how often the others accept f's sufficient signals."),
    ("(agree_|correct_)?incoming", "incoming", "the mean of T(f→g) over the other models f: how often g accepts the others' sufficient signals."),
    (".+_z", "…_z",
     "the robust z-score of the statistic across the study's models: (value − median) / (1.4826 × median absolute deviation); "
     "|z| above the flat-earther threshold makes it an outlier."),
    (".+_outlier", "…_outlier", "the statistic's |z| is above the flat-earther threshold."),
    ("consensus", "consensus",
     "agreement with the leave-one-out consensus on sufficient signals: the share of valid (f, clip) on which the model gives the label most other models give (1/k for a k-way tie)."),
    ("original_consensus", "original_consensus", "the same agreement with the other models, on the original clips."),
    ("dominant_label, dominant_fraction".replace(", ", "|"), "dominant_label, dominant_fraction",
     "the model's most frequent label over everything it labelled (originals, every sufficient signal it heard, the empty signal) and its share."),
    ("empty_label", "empty_label", "the model's label on the empty signal (everything removed)."),
    ("empty_is_dominant", "empty_is_dominant", "the empty signal gets the model's most frequent label."),
    ("degenerate", "degenerate", "dominant_fraction is at least 95%: the model gives one label to nearly everything."),
    ("flat_earther", "flat_earther", "the model is an outlier on any statistic above, or degenerate (the reasons column says which)."),
    ("reasons", "reasons", "why a model is flagged."),
    ("accuracy", "accuracy", "the share of original clips the model labels correctly."),
    ("precision|recall", "precision, recall",
     "macro averages over the classes that occur in the truth or the predictions (scikit-learn's defaults), on the original clips."),
    ("mi", "mi", "I(y; c_f(x)): mutual information (bits, plug-in) between the true label and the model's label on the original clips."),
    ("mi_mm(_source|_true)?", "mi_mm, mi_mm_…",
     "the Miller–Madow estimate of the mutual information beside it: plug-in minus its first-order bias; nearly 0 for unrelated labels, so it can be slightly negative."),
    ("nmi_arithmetic(_source|_true)?", "nmi_arithmetic, nmi_arithmetic_…",
     "normalised mutual information: the plug-in MI divided by the mean of the two entropies (0: unrelated, 1: one label determines the other)."),
    ("h_true", "h_true", "H(y): entropy (bits) of the true labels of the clips counted."),
    ("h_pred", "h_pred", "H(c_f(x)): entropy (bits) of the model's labels on the original clips."),
    ("h_source", "h_source", "H(c_f(x)): entropy (bits) of the source f's labels on the original clips of the pair."),
    ("h_target", "h_target", "H(c_g(x_S^f)): entropy (bits) of the listener g's labels on f's sufficient signals."),
    ("mi_source", "mi_source",
     "I(c_f(x); c_g(x_S^f)) in bits (plug-in): how much g's label on f's sufficient signal tells about f's label on the clip."),
    ("mi_true", "mi_true", "I(y; c_g(x_S^f)) in bits (plug-in): how much g's label on f's sufficient signal tells about the true label."),
    ("sufficient_found", "sufficient_found", "the share of clips for which the model has a verified sufficient signal."),
    ("(source_)?trivial(_fraction)?", "trivial, trivial_fraction",
     "clips (or their share) whose empty signal already gets the model's label: the sufficient set is empty, a finding about the model."),
    ("(source_)?trivial_(counted|by_model)", "trivial_counted, trivial_by_model", "whether trivial clips count as transfer sources, and how many each model has."),
    ("(source_)?silence_label", "silence_label", "the label the model gives to silence (the empty signal)."),
    ("interval", "interval", "the method of the confidence intervals in this row (docs/statistics.md: Clopper–Pearson for cells and accuracy, Korn–Graubard for the task mean and the outgoing/incoming rates, the basic bootstrap for information)."),
    ("interval_note", "interval_note",
     "why a row has no bootstrap interval: below the sample size at which the bootstrap reaches its nominal coverage (docs/statistics.md), no interval is printed rather than a misleadingly tight one."),
    ("mean_size_fraction", "mean_size_fraction", "the mean share of the grid (bins, tiles or segments) kept by the model's verified sufficient signals."),
    ("mean_energy_fraction", "mean_energy_fraction", "the mean share of the clip's energy that those signals keep."),
    ("mean_queries", "mean_queries", "model calls per clip for the search and the extraction."),
    ("n_clips", "n_clips", "clips in the study."),
    ("path", "path", "the data file."),
    ("reason", "reason", "why it was left out."),
)


def column_definitions(columns: Iterable[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """The definitions that cover ``columns`` (as ``(heading, text)``, in a fixed order) and the
    columns that none covers."""
    cols = list(dict.fromkeys(columns))
    used, undefined = set(), []
    for c in cols:
        hits = [k for k, (pattern, _, _) in enumerate(_DEFINITIONS) if re.fullmatch(pattern, c)]
        if not hits:
            undefined.append(c)
        used.update(hits)
    return [(_DEFINITIONS[k][1], _DEFINITIONS[k][2]) for k in sorted(used)], undefined


# ----------------------------------------------------------------------------------------------
# The pages
# ----------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}
td.l,th.l{text-align:left}
img{max-width:100%;display:block;margin:.5em 0}
.clip{border-top:1px solid #ddd;padding:.5em 0}
audio{height:32px;vertical-align:middle}
.wide{overflow-x:auto;max-width:100%}
.note{background:#fff6e0;border-left:4px solid #e0a000;padding:.3em .8em}
.yes{background:#dff3df}.no{background:#f8e0e0}.na{color:#999}
dl.defs dt{font-family:monospace;font-weight:bold;margin-top:.4em}
dl.defs dd{margin-left:1.5em}
.players td{vertical-align:middle}
nav{margin:.5em 0 1em}
.settings{display:flex;flex-wrap:wrap;gap:0 2em;align-items:flex-start}
.settings td.l{white-space:normal}
"""

# Every user string (task, model and class names, file names, paths, failure reasons) reaches a
# page through these templates, whose autoescape escapes it for text and for (quoted) attributes
# alike; only the tables, already escaped by pandas, and the CSS are marked safe.
_TEMPLATES = {
    "base": """<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>
<meta name='viewport' content='width=device-width, initial-scale=1'>
<title>{% block title %}{% endblock %}</title><style>{{ css }}</style></head><body>
{% block body %}{% endblock %}
</body></html>
""",
    "card": """<div class='clip'>
<p><b>clip {{ c.i }}</b> ({{ c.file }}){% if c.page %} · <a href="{{ c.page }}">all models on this clip</a>{% endif %}<br>
true label: <b>{{ c.true }}</b> · {{ c.model }}'s label: <b>{{ c.label }}</b>
{% if c.trivial %}<br><b>label given to silence</b>: the empty signal (everything removed) already gets this label, so the sufficient set is empty
(a finding about the model); the clip is not a transfer source and no model is said to agree<br>
{% elif c.verified %} · kept {{ '%.1f%%' % (100 * c.size) }} of the grid, {{ '%.1f%%' % (100 * c.energy) }} of the energy<br>
its sufficient signal is accepted by {{ c.accepted | join(', ') or 'none' }} ({{ c.accepted | length }} of {{ c.others }} other models){% endif %}</p>
{% if c.verified %}<table class='players'><tr><td>original</td><td><audio controls preload='metadata' src="{{ c.orig_src }}"></audio></td>
<td>sufficient</td><td><audio controls preload='metadata' src="{{ c.suff_src }}"></audio></td></tr></table>
{% if c.png %}<img alt="{{ c.alt }}"{{ ' loading=lazy' if not c.png.startswith('data:') }} src="{{ c.png }}">{% else %}<p class='na'>(no figure: the report draws the first {{ max_clips }} clips per model; <code>jsuff report --max-clips N</code> draws more)</p>{% endif %}
{% else %}<p class='na'>no verified sufficient signal for this clip.</p>{% endif %}
</div>
""",
    "index": """{% extends "base" %}{% block title %}jsuff report: {{ task }}{% endblock %}{% block body %}
<h1>jsuff study: {{ task }}</h1>
<p>{{ n_models }} model{{ 's' if n_models != 1 }} × {{ n_clips }} clips of {{ duration }}. Labels: {{ labels | join(', ') }}.</p>
<p class='note'>This report folder is self-contained: the figures on this page are embedded, the
other pages and figures are in its models/, clips/ and figures/ folders, and every sound is a WAV
file in its audio/ folder, linked by a relative path. Copy or zip the whole <code>report</code>
folder to share it; this page alone has no sound.</p>
{% for note in notes %}<p class='note'>{{ note }}</p>
{% endfor %}
<nav>Contents: <a href="#settings">settings</a> · {% if figures %}<a href="#figures">figures</a> · {% endif %}<a href="#tables">tables</a> ·
<a href="#definitions">definitions</a> · <a href="#clips">every clip</a> · <a href="#listen">listen</a></nav>
<h2 id='settings'>Settings</h2>
<div class='settings'>{% for section, rows in settings %}<div class='wide'><h3>{{ section }}</h3><table>
{% for key, value in rows %}<tr><th class='l'>{{ key }}</th><td class='l'>{{ value }}</td></tr>
{% endfor %}</table></div>
{% endfor %}</div>
{% if figures %}<h2 id='figures'>Figures</h2>{% endif %}
{% for title, uri in figures %}<h3>{{ title }}</h3><img alt="{{ title }}" src="{{ uri }}">
{% endfor %}
<h2 id='tables'>Tables</h2>
<p>Every table is also a CSV file in the study's <code>tables/</code> folder; wide tables scroll
sideways. The columns are defined <a href="#definitions">below the tables</a>.</p>
{% if task_table %}<h3>Task summary</h3>{{ task_table }}{% endif %}
{% for title, table in tables %}<h3>{{ title }}</h3>{{ table }}
{% endfor %}
{% if failures is not none %}<h3>Files left out of the study ({{ n_failures }})</h3>
{{ failures if n_failures else 'None.' }}{% endif %}
<h3 id='definitions'>Definitions of the columns</h3>
<p>f is the source model (whose sufficient signal is played), g the listener; c_f(x) is f's label on
clip x, x_S^f f's sufficient signal for x, y the true label. A clip is a valid source for f when f's
sufficient signal was verified to keep f's label (and the clip's true label is known).</p>
<dl class='defs'>{% for head, text in definitions %}<dt>{{ head }}</dt><dd>{{ text }}</dd>
{% endfor %}</dl>
<h2 id='clips'>Every clip</h2>
<p>Each model's label on the original clip (✓: the true label); "accepted" counts the ordered
pairs f ≠ g in which g gives f's label to f's sufficient signal for the clip (a clip whose label f
gives to silence is no source for f). A clip's page plays the
clip and every model's sufficient signal side by side.</p>
<div class='wide'><table><tr><th>clip</th><th class='l'>file</th><th class='l'>true label</th>
{% for g in clip_table.names %}<th>{{ g }}</th>{% endfor %}<th>accepted</th></tr>
{% for r in clip_table.rows %}<tr><td><a href="{{ r.page }}">{{ r.i }}</a></td><td class='l'>{{ r.file }}</td><td class='l'>{{ r.true }}</td>
{% for v in r.labels %}<td>{{ v }}</td>{% endfor %}<td>{{ r.accepted }}</td></tr>
{% endfor %}</table></div>
<h2 id='listen'>Listen: sufficient signals</h2>
{% for m in model_blocks %}<h3>{{ m.name }}</h3>
<p>{{ m.shown }} of {{ m.verified }} clips with a verified sufficient signal shown ({{ m.n_clips }} clips in all):
<a href="{{ m.page }}">every clip of {{ m.name }}</a>.</p>
{% for c in m.cards %}{% include "card" %}{% endfor %}
{% endfor %}
{% endblock %}""",
    "model": """{% extends "base" %}{% block title %}jsuff report: {{ name }}, every clip{% endblock %}{% block body %}
<nav><a href="../index.html">← the study</a></nav>
<h1>{{ name }}: every clip ({{ n_clips }})</h1>
<p>Study {{ task }}. {{ verified }} of {{ n_clips }} clips have a verified sufficient signal. Figures are drawn
for the clips shown on the study page.</p>
{% for c in cards %}{% include "card" %}{% endfor %}
{% endblock %}""",
    "clip": """{% extends "base" %}{% block title %}jsuff report: clip {{ i }}{% endblock %}{% block body %}
<nav><a href="../index.html">← the study</a>{% if prev %} · <a href="{{ prev }}">← clip {{ i - 1 }}</a>{% endif %}{% if next %} · <a href="{{ next }}">clip {{ i + 1 }} →</a>{% endif %}</nav>
<h1>clip {{ i }}: {{ file }}</h1>
<p>true label: <b>{{ true_label }}</b> · {{ duration }} · study {{ task }}</p>
<p>original <audio controls preload='metadata' src="{{ orig_src }}"></audio></p>
<h2>Each model's sufficient signal</h2>
<div class='wide'><table class='players'><tr><th class='l'>model f</th><th>label on the clip</th><th>sufficient signal</th><th>kept (grid)</th><th>kept (energy)</th></tr>
{% for r in rows %}<tr><th class='l'>{{ r.name }}</th><td>{{ r.label }}</td>
<td>{% if r.suff_src %}<audio controls preload='metadata' src="{{ r.suff_src }}"></audio>{% else %}<span class='na'>none verified</span>{% endif %}</td>
<td>{{ r.size }}</td><td>{{ r.energy }}</td></tr>
{% endfor %}</table></div>
<h2>Who accepts whose</h2>
<p>Row f, column g: the label g gives to f's sufficient signal; ✓ when it is f's label (g accepts f's
evidence), ✗ when not. The first row gives each model's label on the original clip.</p>
<div class='wide'><table><tr><th class='l'>f \\ g</th>{% for g in names %}<th>{{ g }}</th>{% endfor %}</tr>
<tr><th class='l'>original clip</th>{% for v in original %}<td>{{ v }}</td>{% endfor %}</tr>
{% for name, cells in matrix %}<tr><th class='l'>{{ name }}</th>{% for text, kind in cells %}<td class='{{ kind }}'>{{ text }}</td>{% endfor %}</tr>
{% endfor %}</table></div>
{% for name, png in figures %}<h3>{{ name }}</h3><img alt="clip {{ i }} of {{ name }}" loading="lazy" src="{{ png }}">
{% endfor %}
{% endblock %}""",
}
_ENV = jinja2.Environment(
    loader=jinja2.DictLoader(_TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
)


def _data_uri(png: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(png).decode()}"


def html_table(frame: Any, max_rows: int = 200) -> Markup:
    """A DataFrame as an escaped HTML table (numbers by :func:`format_number`), at most ``max_rows`` rows."""
    shown = frame.head(max_rows)
    note = f"<p>({len(frame) - max_rows} more rows in the CSV)</p>" if len(frame) > max_rows else ""
    # escape=True: pandas escapes every cell and header (model names, paths, reasons)
    body = shown.to_html(index=False, float_format=format_number, border=0, na_rep="–", escape=True)
    return Markup(f"<div class='wide'>{body}</div>{note}")


def _href(rel: str) -> str:
    """A relative file path as a URL (each component percent-encoded)."""
    return "/".join(quote(part) for part in rel.split("/"))


def _save_png(path: Path, png: bytes) -> None:
    atomic_write(path, lambda f: f.write(png))


def write_report(study_dir: str | Path, *, max_clips: int = MAX_CLIPS_PER_MODEL) -> Path:
    """Write ``study_dir/report/`` (see the module docstring); returns the index page's path.

    Args:
        study_dir: a finished study's output directory (what ``jsuff study`` wrote).
        max_clips: clips per model shown on the index page, with a figure each; every clip of
            every model is still listed, and playable, on the model's and the clip's pages.

    Raises:
        StudyError: no finished study there, the folder is in use by a running study, a file of
            the report cannot be written (named), or a study file is damaged.
        ValueError: a negative ``max_clips``.
    """
    if max_clips < 0:
        raise ValueError(f"max_clips must be >= 0, got {max_clips}")
    root = Path(study_dir)
    arrays = load_arrays(root)
    try:
        with folder_lock(root, "jsuff report"):
            return _write_report(root, arrays, max_clips)
    except FolderLockedError as e:
        raise StudyError(str(e)) from None
    except WriteError as e:
        raise StudyError(f"{e.strerror}; the report is incomplete: make room (or make it writable) and rerun `jsuff report`") from None


@dataclasses.dataclass(frozen=True)
class _Study:
    """What the pages need, read once."""

    root: Path
    out: Path
    arrays: StudyArrays
    meta: Mapping[str, Any]
    summary: Mapping[str, Any]
    clips: np.ndarray  # [N, T] at the study rate
    raw_labels: tuple[str, ...]  # each clip's label as the data gave it ("" for none)
    sr: int
    domain: Domain
    max_clips: int
    written: set[Path] = dataclasses.field(default_factory=set)  # every file of this report

    def put(self, rel: str, write: Any) -> str:
        """Write the report's file ``rel`` by ``write(path)``, recorded as part of this report."""
        path = self.out / rel
        write(path)
        self.written.add(path)
        return rel

    @property
    def names(self) -> list[str]:
        return list(self.arrays.model_names)

    def true_label(self, i: int) -> str:
        t = int(self.arrays.true[i])
        if t >= 0:
            return self.arrays.label_names[t]
        raw = self.raw_labels[i]
        return f"none ({raw}: a class no model has)" if raw else "none (unlabelled data)"

    def duration(self) -> str:
        t = self.clips.shape[1]
        return f"{t / self.sr:.3g} s ({t} samples at {self.sr} Hz)"


def _read_summary(root: Path) -> dict[str, Any]:
    p = root / "summary.json"
    try:
        s = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    return s if isinstance(s, dict) else {}


def _write_report(root: Path, arrays: StudyArrays, max_clips: int) -> Path:
    tables = read_tables(root)
    meta = study_record(root)
    cfg = meta["config"]
    try:
        domain = get_domain(str(cfg.get("domain", "rfft")), **dict(cfg.get("domain_options") or []))
    except (TypeError, ValueError) as e:
        raise StudyError(f"{root / 'study.json'} records a domain jsuff cannot rebuild: {e}") from None
    clips = load_npz(root / "data" / "clips.npz", ("waveforms", "labels"))
    st = _Study(
        root=root, out=root / "report", arrays=arrays, meta=meta, summary=_read_summary(root),
        clips=clips["waveforms"], raw_labels=tuple(str(x) for x in clips["labels"]),
        sr=int(cfg["data"]["sample_rate"]), domain=domain, max_clips=max_clips,
    )
    names = st.names
    task = str(cfg["task"])

    figs: list[tuple[str, str, bytes]] = []
    if "pairs" in tables:
        figs.append(("transfer", "Transfer matrix T(f→g)", transfer_figure(tables["pairs"], names, f"{task}: T(f→g)")))
    if "models" in tables:
        figs.append(("rates", "Incoming and outgoing rates", rates_figure(tables["models"], tables.get("flat_earthers"))))
    if "information" in tables:
        figs.append(("information", "Mutual information beside accuracy", info_figure(tables["information"], tables.get("metrics"))))
    for key, _, png in figs:
        st.put(f"figures/{key}.png", lambda p, png=png: _save_png(p, png))

    failures, n_failures = None, 0
    shown_tables: list[Any] = []
    if (root / "data" / "failures.csv").exists():
        import pandas as pd

        # every column as text: a file named "NA" or "1e3" stays what it is
        fail = pd.read_csv(root / "data" / "failures.csv", dtype=str, keep_default_na=False)
        failures, n_failures = html_table(fail), len(fail)
        shown_tables.append(fail)
    titled = (
        ("pairs", "Transfer per ordered pair"),
        ("models", "Per model: outgoing and incoming rates"),
        ("flat_earthers", "Flat-earther screening"),
        ("metrics", "Accuracy, precision, recall on the original clips"),
        ("information", "Information per ordered pair (bits)"),
        ("baselines", "Baselines: empty signal, sufficient-set sizes"),
    )
    shown_tables += [tables[k] for k in ("task", *(k for k, _ in titled)) if k in tables]
    definitions, _ = column_definitions(c for t in shown_tables for c in t.columns)

    notes = []
    if len(names) < 2:
        notes.append(ONE_MODEL_NOTE.format(name=names[0]))
    unknown = unknown_classes(list(st.raw_labels), arrays.label_names)
    if unknown:
        what = "a label that is not a class of the label view" if meta.get("label_view") else "a class that no model has"
        notes.append(
            f"{sum(unknown.values())} clip(s) have {what} ("
            + ", ".join(f"{name}: {count}" for name, count in unknown.items())
            + "): they have no true label and the tables use the clips of known classes."
        )

    audio = _write_audio(st)
    cards = {name: _cards(st, fi, audio) for fi, name in enumerate(names)}
    model_blocks = []
    slugs = {m["name"]: m["slug"] for m in meta["models"]}
    for fi, name in enumerate(names):
        verified = [c for c in cards[name] if c["verified"]]
        shown = [c for c in verified if c["png_file"]]
        model_blocks.append({
            "name": name, "page": _href(f"models/{slugs[name]}.html"), "n_clips": len(cards[name]),
            "verified": len(verified), "shown": len(shown),
            "cards": [_card_for(c, "", embed=True) for c in shown],
        })
        html = _ENV.get_template("model").render(
            css=Markup(_CSS), name=name, task=task, n_clips=len(cards[name]), verified=len(verified),
            max_clips=max_clips, cards=[_card_for(c, "../", embed=False) for c in cards[name]],
        )
        st.put(f"models/{slugs[name]}.html", lambda p, html=html: write_text(p, html))
    for i in range(len(arrays.paths)):
        _write_clip_page(st, i, cards, audio)

    html = _ENV.get_template("index").render(
        task=task,
        css=Markup(_CSS),
        n_models=len(names),
        n_clips=len(arrays.paths),
        duration=st.duration(),
        labels=arrays.label_names,
        notes=notes,
        settings=_settings(st),
        task_table=html_table(tables["task"]) if "task" in tables else None,
        figures=[(title, _data_uri(png)) for _, title, png in figs],
        tables=_view_tables(meta) + [(title, html_table(tables[key])) for key, title in titled if key in tables],
        failures=failures,
        n_failures=n_failures,
        definitions=definitions,
        clip_table=_clip_table(st),
        model_blocks=model_blocks,
        max_clips=max_clips,
    )
    page = st.out / st.put("index.html", lambda p: write_text(p, html))
    _prune(st)
    return page


def label_view_frame(rows: Sequence[Mapping[str, Any]]) -> Any:
    """The label view as a table: one row per class, one column per model, each cell the model's
    outputs that stand for the class (``rows``: ``study.json``'s ``label_view``)."""
    import pandas as pd

    classes = list(dict.fromkeys(c for r in rows for c in r["classes"]))
    body = [[c, *(", ".join(r["classes"].get(c, [])) for r in rows)] for c in classes]
    return pd.DataFrame(body, columns=["class", *(str(r["model"]) for r in rows)])


def _view_tables(meta: Mapping[str, Any]) -> list[tuple[str, Markup]]:
    if not meta.get("label_view"):
        return []
    title = "Label view: the outputs of each model that stand for each class (a class's score is their max)"
    return [(title, html_table(label_view_frame(meta["label_view"])))]


def _prune(st: _Study) -> None:
    """Remove what an earlier report left in the report's own folders and this one did not write
    (clips no longer drawn, an older layout), so that the folder holds exactly this report."""
    for sub in ("audio", "figures", "clips", "models"):
        folder = st.out / sub
        if not folder.is_dir():
            continue
        for p in sorted(folder.rglob("*"), reverse=True):  # files before their folders
            if p.is_file() and p.suffix in (".wav", ".png", ".html") and p not in st.written:
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()


def _write_audio(st: _Study) -> dict[str, Any]:
    """Every original (study rate) and every verified sufficient signal (model rate) as a WAV;
    returns the explanation batches' per-clip fields by model, for the pages."""
    arrays = st.arrays
    for i in range(len(arrays.paths)):
        st.put(f"audio/original/clip_{i:04d}.wav", lambda p, i=i: write_wav(p, st.clips[i], st.sr))
    record = {m["name"]: m for m in st.meta["models"]}
    per_model: dict[str, Any] = {}
    for name in st.names:
        slug = record[name]["slug"]
        rate = _model_rate(record[name], st.root)
        rows: dict[int, dict[str, Any]] = {}
        for batch in iter_explanations(st.root, name):
            for j, i in enumerate(batch["index"]):
                i = int(i)
                row = {"rate": rate, "verified": bool(batch["verified"][j])}
                if row["verified"]:
                    wave = batch["sufficient"][j]
                    rel = st.put(f"audio/{slug}/clip_{i:04d}_sufficient.wav", lambda p, w=wave: write_wav(p, w, rate))
                    row |= {
                        "suff_rel": rel, "mask": batch["mask"][j], "responsibility": batch["responsibility"][j],
                        "length": int(batch["sufficient"].shape[1]),
                        "size": float(batch["size_fraction"][j]), "energy": float(batch["energy_fraction"][j]),
                    }
                rows[i] = row
        per_model[name] = {"slug": slug, "rows": rows}
    return per_model


def _cards(st: _Study, fi: int, audio: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One card per clip for model ``fi``; the first ``max_clips`` verified ones get a figure."""
    arrays = st.arrays
    name = st.names[fi]
    slug, rows = audio[name]["slug"], audio[name]["rows"]
    out, drawn = [], 0
    for i in range(len(arrays.paths)):
        row = rows.get(i, {"verified": False})
        card = {
            "i": i, "file": Path(arrays.paths[i]).name, "true": st.true_label(i), "model": name,
            "label": arrays.label_names[arrays.original[fi, i]], "verified": row["verified"],
            "others": len(st.names) - 1, "orig_rel": f"audio/original/clip_{i:04d}.wav",
            "png_file": None, "png": None, "trivial": bool(arrays.trivial[fi, i]),
        }
        if row["verified"]:
            card["accepted"] = [
                g for gi, g in enumerate(st.names) if gi != fi and arrays.labels[fi, gi, i] == arrays.original[fi, i]
            ]
            card |= {"size": row["size"], "energy": row["energy"], "suff_rel": row["suff_rel"]}
            if drawn < st.max_clips:
                png = clip_figure(
                    _resampled(st.clips[i], st.sr, row["rate"], row["length"]), row["mask"], row["responsibility"],
                    row["rate"], f"{name} · clip {i} · label {card['label']} · true {card['true']}", domain=st.domain,
                )
                card["png_file"] = st.put(f"figures/clip_{slug}_{i:04d}.png", lambda p, png=png: _save_png(p, png))
                card["png_bytes"] = png
                drawn += 1
        out.append(card)
    return out


def _card_for(card: Mapping[str, Any], up: str, *, embed: bool) -> dict[str, Any]:
    """``card`` as a page ``up`` levels below the report folder shows it."""
    c = dict(card)
    c["page"] = _href(f"{up}clips/clip_{card['i']:04d}.html")
    c["orig_src"] = _href(up + card["orig_rel"])
    if card["verified"]:
        c["suff_src"] = _href(up + card["suff_rel"])
    if card["png_file"]:
        c["png"] = _data_uri(card["png_bytes"]) if embed else _href(up + card["png_file"])
    c["alt"] = f"clip {card['i']} of {card['model']}"
    return c


def _write_clip_page(st: _Study, i: int, cards: Mapping[str, list[dict[str, Any]]], audio: Mapping[str, Any]) -> None:
    arrays, names = st.arrays, st.names
    rows, matrix, figures = [], [], []
    for fi, f in enumerate(names):
        c = cards[f][i]
        rows.append({
            "name": f, "label": c["label"],
            "suff_src": _href("../" + c["suff_rel"]) if c["verified"] else None,
            "size": f"{100 * c['size']:.1f}%" if c["verified"] else "–",
            "energy": f"{100 * c['energy']:.1f}%" if c["verified"] else "–",
        })
        if c["trivial"]:  # its "sufficient signal" is silence: not a transfer source (docs/statistics.md)
            cells = [("label given to silence", "na")] * len(names)
        elif c["verified"]:
            cells = []
            for gi in range(len(names)):
                lab = arrays.labels[fi, gi, i]
                ok = lab == arrays.original[fi, i]
                cells.append((f"{'✓' if ok else '✗'} {arrays.label_names[lab]}", "yes" if ok else "no"))
        else:
            cells = [("no verified signal", "na")] * len(names)
        matrix.append((f, cells))
        if c["png_file"]:
            figures.append((f, _href("../" + c["png_file"])))
    n = len(arrays.paths)
    html = _ENV.get_template("clip").render(
        css=Markup(_CSS), i=i, file=Path(arrays.paths[i]).name, true_label=st.true_label(i), duration=st.duration(),
        task=str(st.meta["config"]["task"]), orig_src=_href(f"../audio/original/clip_{i:04d}.wav"),
        rows=rows, names=names, original=[arrays.label_names[arrays.original[g, i]] for g in range(len(names))],
        matrix=matrix, figures=figures,
        prev=_href(f"clip_{i - 1:04d}.html") if i > 0 else None,
        next=_href(f"clip_{i + 1:04d}.html") if i + 1 < n else None,
    )
    st.put(f"clips/clip_{i:04d}.html", lambda p: write_text(p, html))


def _clip_table(st: _Study) -> dict[str, Any]:
    """Every clip: its page, file, true label, each model's label on it, accepted transfers."""
    arrays, names = st.arrays, st.names
    m = len(names)
    rows = []
    for i in range(len(arrays.paths)):
        labels = [
            arrays.label_names[arrays.original[fi, i]] + (" ✓" if arrays.original[fi, i] == arrays.true[i] else "")
            for fi in range(m)
        ]
        pairs = [
            (fi, gi) for fi in range(m) for gi in range(m)
            if fi != gi and arrays.valid[fi, i] and not arrays.trivial[fi, i]  # trivial clips are no sources
        ]
        ok = sum(int(arrays.labels[fi, gi, i] == arrays.original[fi, i]) for fi, gi in pairs)
        rows.append({
            "i": i, "page": _href(f"clips/clip_{i:04d}.html"), "file": Path(arrays.paths[i]).name,
            "true": st.true_label(i), "labels": labels, "accepted": f"{ok} of {len(pairs)}" if pairs else "–",
        })
    return {"names": names, "rows": rows}


def _settings(st: _Study) -> list[tuple[str, list[tuple[str, str]]]]:
    cfg, arrays = st.meta["config"], st.arrays
    data = cfg["data"]
    record = {m["name"]: m for m in st.meta["models"]}

    def show(v: Any) -> str:
        if v is None:
            return "none"
        if isinstance(v, (list, tuple)):
            return ", ".join(map(show, v)) or "none"
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)

    length = st.clips.shape[1]
    study = [
        ("task", show(cfg["task"])),
        ("seed", show(cfg.get("seed"))),
        ("clips", f"{len(arrays.paths)} (from {show(data.get('path') or 'a file list')})"),
        ("clip duration", f"{st.duration()}" + ("" if data.get("duration") is not None else " (the shortest clip's length)")),
        ("study sample rate", f"{st.sr} Hz (each model resamples from it to its own rate)"),
        ("crop, pad", f"{show(data.get('crop'))}, {show(data.get('pad'))}"),
        ("split, limit", f"{show(data.get('split'))}, {show(data.get('limit'))}"),
    ]
    models = []
    for name in st.names:
        m = record[name]
        rate = m.get("sample_rate")
        cells = ""
        if rate:
            n = int(round(length * int(rate) / st.sr))
            cells = f", a {' × '.join(map(str, st.domain.grid_shape(n)))} {st.domain.name} grid"
        models.append((name, f"{show(m.get('path'))} ({show(rate)} Hz{cells})"))
    domain = [(k, show(v)) for k, v in st.domain.to_json().items()]
    search = [(k, show(v)) for k, v in (cfg.get("search") or {}).items()]
    extract = [(k, show(v)) for k, v in (cfg.get("extract") or {}).items()]
    stats = [(k, show(cfg.get(k))) for k in ("n_boot", "flat_earther_threshold") if k in cfg]
    summary = st.summary
    run = [(k, show(cfg.get(k))) for k in ("clips_per_batch", "predict_batch") if k in cfg]
    run.append(("devices", show(summary.get("devices", cfg.get("devices")))))
    if "total_seconds_this_run" in summary:
        run.append((
            "run time",
            f"{summary['total_seconds_this_run']:.1f} s in all, {summary.get('explain_seconds_this_run', float('nan')):.1f} s "
            "explaining (of the last run: a resumed run counts only the work it did)",
        ))
    recorded = summary.get("versions")
    run.append(("versions (the study's last run)", _versions_text(recorded) if isinstance(recorded, dict) else "not recorded (a study from before jsuff recorded them)"))
    run.append(("versions (this report)", _versions_text(software_versions())))
    run.append(("report written", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")))
    return [
        ("Study", study), ("Models", models), (f"Domain: {st.domain.name}", domain), ("Search", search),
        ("Extraction", extract), ("Statistics", stats), ("Run", run),
    ]


def _versions_text(v: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {x}" for k, x in v.items())


def _model_rate(model: Mapping[str, Any], root: Path) -> int:
    """The model's sample rate as the study recorded it (studies written before jsuff recorded it:
    read from the model folder, when that is still where the study found it)."""
    if model.get("sample_rate") is not None:
        return int(model["sample_rate"])
    p = Path(model["path"]) / "model.json"
    if Path(model["path"]).is_absolute() and p.is_file():
        return int(json.loads(p.read_text())["sample_rate"])
    raise StudyError(
        f"{root / 'study.json'} does not record the sample rate of model {model['name']!r} and its folder "
        f"{model['path']} cannot be found from here; resume the study once with this jsuff to record it"
    )


def _resampled(x: np.ndarray, sr: int, rate: int, length: int) -> np.ndarray:
    from jsuff.audio import resample
    from jsuff.models.base import InputPolicy, fit_length

    y = resample(x, sr, rate) if sr != rate else x
    return fit_length(y, InputPolicy(length=length))


def summary_text(study_dir: str | Path, tables: Mapping[str, Any] | None = None) -> str:
    """A short plain-text summary (transfer matrix, flat-earthers, MI beside accuracy)."""
    root = Path(study_dir)
    tables = tables or read_tables(root)
    arrays = load_arrays(root)
    names = list(arrays.model_names)
    lines = []
    if len(names) < 2:
        lines.append(ONE_MODEL_NOTE.format(name=names[0]))
    if "pairs" in tables:
        mat = _pivot(tables["pairs"], names, "rate")
        w = max(len(n) for n in names) + 2
        lines.append("Transfer matrix T(f→g) (rows: source f, columns: listener g)")
        lines.append(" " * w + "".join(f"{n[:9]:>10}" for n in names))
        for f, n in enumerate(names):
            lines.append(f"{n:<{w}}" + "".join(f"{format_number(v, 2):>10}" if not np.isnan(v) else f"{'–':>10}" for v in mat[f]))
    if "task" in tables:
        t = tables["task"].iloc[0].to_dict()
        lines.append(
            "mean over ordered pairs f≠g: "
            + ", ".join(f"{k}={format_number(v)}" if isinstance(v, float) else f"{k}={v}" for k, v in t.items())
        )
    if "flat_earthers" in tables:
        fe = tables["flat_earthers"]
        cols = [c for c in ("model", "outgoing", "outgoing_z", "incoming", "incoming_z", "consensus",
                            "consensus_z", "dominant_fraction", "flat_earther", "reasons") if c in fe]
        lines.append("Flat-earther screening (robust z-scores; flagged models listed with their reasons):")
        shown = fe[cols].copy()
        if "reasons" in shown:
            # only the text column: filling float columns with "" is a pandas dtype-change warning
            shown["reasons"] = shown["reasons"].astype(object).fillna("")
        lines.append(shown.to_string(index=False, float_format=lambda v: format_number(v, 2)))
    if "metrics" in tables:
        met = tables["metrics"].set_index("model")
        mi = None
        if "information" in tables:
            info = tables["information"]
            mi = info[info["source"] != info["target"]].groupby("source")["mi_source"].mean()
            lines.append("Accuracy beside mean transferred MI (bits):")
        else:
            lines.append("Accuracy on the original clips:")
        for n in names:
            line = f"  {n:<16} accuracy {format_number(met.loc[n, 'accuracy'])}"
            if mi is not None:
                line += f"   MI {format_number(mi.get(n, float('nan')))}"
            lines.append(line)
    lines += _data_notes(root)
    return "\n".join(lines)


def _data_notes(root: Path) -> list[str]:
    """What the console must say about the data: files left out, clips of classes no model has."""
    summary = _read_summary(root)
    lines = []
    failed = int(summary.get("failed_files", 0))
    if failed:
        lines.append(f"{failed} data file(s) left out of the study: see {root / 'data' / 'failures.csv'}")
    unknown = summary.get("unknown_class_clips") or {}
    if unknown:
        what = "a label that is not a class of the label view" if "label_view" in study_record(root) else "a class no model has"
        lines.append(
            f"{sum(unknown.values())} clip(s) of {what} ("
            + ", ".join(f"{c!r}: {k}" for c, k in unknown.items())
            + "): no true label; the tables use the clips of known classes"
        )
    return lines
