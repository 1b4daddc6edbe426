"""Figures, listening files and one self-contained HTML page for a study directory.

``write_report(study_dir)`` reads what :func:`jsuff.app.study.run_study` wrote and produces, under
``study_dir/report/``:

* ``index.html``: the tables, the figures (embedded as PNG data URIs, so the page is one file) and
  an audio player for each listed sufficient signal beside its original clip;
* ``figures/*.png``: the same figures as files (transfer matrix with n and intervals, incoming and
  outgoing rates with flat-earther flags, mutual information beside accuracy, and per-clip
  spectrograms with the sufficient mask and the responsibility map);
* ``audio/<slug>/clip_<i>_{original,sufficient}.wav``: what the models heard (``<slug>``: the
  model's folder name in the study, :func:`jsuff.app.study.model_slugs`).

Every user string on the page (task, model and class names, file names, failure reasons) is
escaped for its HTML context by the templates' autoescape; every file is written atomically.

Example:
    >>> write_report("runs/genre")     # doctest: +SKIP
    PosixPath('runs/genre/report/index.html')
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import numpy as np
from markupsafe import Markup

from jsuff._files import FolderLockedError, WriteError, atomic_write, folder_lock
from jsuff.audio import write_wav
from jsuff.app.study import (
    StudyArrays,
    StudyError,
    iter_explanations,
    load_arrays,
    load_npz,
    read_tables,
    save_text,
    study_record,
    unknown_classes,
)

MAX_CLIPS_PER_MODEL = 6


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
    waveform: np.ndarray, mask: np.ndarray, responsibility: np.ndarray, sample_rate: int, title: str
) -> bytes:
    """The clip's spectrum or spectrogram with the sufficient mask and the responsibility map."""
    plt = _mpl()
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 6.2), sharex=mask.ndim == 1)
    if mask.ndim == 1 and mask.shape[0] == waveform.shape[0] // 2 + 1:
        freqs = np.fft.rfftfreq(waveform.shape[0], 1.0 / sample_rate)
        mag = 20 * np.log10(np.abs(np.fft.rfft(waveform)) + 1e-9)
        axes[0].plot(freqs, mag, lw=0.5, color="0.4")
        axes[0].set_ylabel("|X| (dB)")
        axes[1].fill_between(freqs, 0, mask.astype(float), step="mid", color="tab:green")
        axes[1].set_ylabel("kept")
        axes[2].plot(freqs, responsibility, lw=0.6, color="tab:purple")
        axes[2].set_ylabel("responsibility")
        axes[2].set_xlabel("frequency (Hz)")
    else:
        axes[0].specgram(waveform, Fs=sample_rate, NFFT=512, noverlap=384, cmap="magma")
        axes[0].set_ylabel("Hz")
        m = mask if mask.ndim == 2 else mask[None, :]
        r = responsibility if responsibility.ndim == 2 else responsibility[None, :]
        axes[1].imshow(m, aspect="auto", origin="lower", cmap="Greens", interpolation="nearest")
        axes[1].set_ylabel("kept")
        axes[2].imshow(r, aspect="auto", origin="lower", cmap="magma", interpolation="nearest")
        axes[2].set_ylabel("responsibility")
    axes[0].set_title(_plain(title), fontsize=9)
    fig.tight_layout()
    return _png(fig)


# ----------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3}
img{max-width:100%;display:block;margin:.5em 0}
.clip{border-top:1px solid #ddd;padding:.5em 0}
audio{height:32px;vertical-align:middle}
.wide{overflow-x:auto;max-width:100%}
.note{background:#fff6e0;border-left:4px solid #e0a000;padding:.3em .8em}
"""

# Every user string (task, model and class names, file names, failure reasons) reaches the page
# through these templates, whose autoescape escapes it for text and for (quoted) attributes alike;
# only the tables, already escaped by pandas, and the CSS are marked safe.
_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)

_PAGE = _ENV.from_string("""<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>
<title>jsuff report: {{ task }}</title><style>{{ css }}</style></head><body>
<h1>jsuff study: {{ task }}</h1>
<p>{{ n_models }} models × {{ n_clips }} clips. Labels: {{ labels | join(', ') }}.</p>
{% if unknown %}<p class='note'>{{ unknown.values() | sum }} clip(s) have a class that no model has
({% for name, count in unknown.items() %}{{ name }}: {{ count }}{{ ', ' if not loop.last }}{% endfor %}):
they have no true label and the tables use the clips of known classes.</p>{% endif %}
{% if task_table %}<h2>Task summary</h2>{{ task_table }}{% endif %}
{% for title, uri in figures %}<h2>{{ title }}</h2><img alt="{{ title }}" src="{{ uri }}">
{% endfor %}
{% for title, table in tables %}<h2>{{ title }}</h2>{{ table }}
{% endfor %}
{% if failures is not none %}<h2>Files left out of the study ({{ n_failures }})</h2>
{{ failures if n_failures else 'None.' }}{% endif %}
<h2>Listen: sufficient signals</h2>
{{ clips }}
</body></html>
""")

_MODEL = _ENV.from_string("<h3>{{ name }}</h3>")

_NO_CLIP = "<p>No verified sufficient signal to show.</p>"

_CARD = _ENV.from_string(
    "<div class='clip'>"
    "<p><b>clip {{ i }}</b> ({{ file }}) → {{ label }}; "
    "kept {{ '%.1f%%' % (100 * size) }} of the grid, {{ '%.1f%%' % (100 * energy) }} of the energy; "
    "{{ verdict }}</p>"
    "<p>original <audio controls preload='none' src='{{ orig_src }}'></audio> "
    "sufficient <audio controls preload='none' src='{{ suff_src }}'></audio></p>"
    "<img alt=\"{{ alt }}\" src=\"{{ png }}\"></div>"
)


def _data_uri(png: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(png).decode()}"


def _table(frame: Any, max_rows: int = 200) -> Markup:
    shown = frame.head(max_rows)
    note = f"<p>({len(frame) - max_rows} more rows in the CSV)</p>" if len(frame) > max_rows else ""
    # escape=True: pandas escapes every cell and header (model names, paths, reasons)
    body = shown.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0, na_rep="–", escape=True)
    return Markup(f"<div class='wide'>{body}</div>{note}")


def _href(rel: str) -> str:
    """A relative file path as a URL (each component percent-encoded)."""
    return "/".join(quote(part) for part in rel.split("/"))


def _save_png(path: Path, png: bytes) -> None:
    atomic_write(path, lambda f: f.write(png))


def write_report(study_dir: str | Path, *, max_clips: int = MAX_CLIPS_PER_MODEL) -> Path:
    """Write ``study_dir/report/`` (see the module docstring); returns the HTML page's path.

    Raises:
        StudyError: no finished study there, the folder is in use by a running study, a file of
            the report cannot be written (named), or a study file is damaged.
    """
    root = Path(study_dir)
    arrays = load_arrays(root)
    try:
        with folder_lock(root, "jsuff report"):
            return _write_report(root, arrays, max_clips)
    except FolderLockedError as e:
        raise StudyError(str(e)) from None
    except WriteError as e:
        raise StudyError(f"{e.strerror}; the report is incomplete: make room (or make it writable) and rerun `jsuff report`") from None


def _write_report(root: Path, arrays: StudyArrays, max_clips: int) -> Path:
    tables = read_tables(root)
    meta = study_record(root)
    sr = int(meta["config"]["data"]["sample_rate"])
    out = root / "report"
    names = list(arrays.model_names)
    task = str(meta["config"]["task"])

    figs: list[tuple[str, str, bytes]] = []
    if "pairs" in tables:
        figs.append(("transfer", "Transfer matrix T(f→g)", transfer_figure(tables["pairs"], names, f"{task}: T(f→g)")))
    if "models" in tables:
        figs.append(("rates", "Incoming and outgoing rates", rates_figure(tables["models"], tables.get("flat_earthers"))))
    if "information" in tables:
        figs.append(("information", "Mutual information beside accuracy", info_figure(tables["information"], tables.get("metrics"))))
    for key, _, png in figs:
        _save_png(out / "figures" / f"{key}.png", png)

    clips = load_npz(root / "data" / "clips.npz", ("waveforms", "labels"))
    clips_html = _clip_sections(root, out, arrays, meta, clips["waveforms"], sr, max_clips)
    failures, n_failures = None, 0
    if (root / "data" / "failures.csv").exists():
        import pandas as pd

        # every column as text: a file named "NA" or "1e3" stays what it is
        fail = pd.read_csv(root / "data" / "failures.csv", dtype=str, keep_default_na=False)
        failures, n_failures = _table(fail), len(fail)
    titled = (
        ("pairs", "Transfer per ordered pair"),
        ("models", "Per model: outgoing and incoming rates"),
        ("flat_earthers", "Flat-earther screening"),
        ("metrics", "Accuracy, precision, recall on the original clips"),
        ("information", "Information per ordered pair (bits)"),
        ("baselines", "Baselines: empty signal, sufficient-set sizes"),
    )
    page = out / "index.html"
    save_text(page, _PAGE.render(
        task=task,
        css=Markup(_CSS),
        n_models=len(names),
        n_clips=len(arrays.paths),
        labels=arrays.label_names,
        unknown=unknown_classes([str(x) for x in clips["labels"]], arrays.label_names),
        task_table=_table(tables["task"]) if "task" in tables else None,
        figures=[(title, _data_uri(png)) for _, title, png in figs],
        tables=[(title, _table(tables[key])) for key, title in titled if key in tables],
        failures=failures,
        n_failures=n_failures,
        clips=Markup(clips_html),
    ))
    return page


def _clip_sections(root: Path, out: Path, arrays: StudyArrays, meta: Mapping[str, Any], clips: np.ndarray,
                   sr: int, max_clips: int) -> str:
    record = {m["name"]: m for m in meta["models"]}
    blocks = []
    for fi, name in enumerate(arrays.model_names):
        slug = record[name]["slug"]
        rate = _model_rate(record[name], root)
        shown = 0
        blocks.append(_MODEL.render(name=name))
        for batch in iter_explanations(root, name):
            for j, i in enumerate(batch["index"]):
                if shown >= max_clips:
                    break
                if not batch["verified"][j]:
                    continue
                i = int(i)
                orig_rel = f"audio/{slug}/clip_{i:04d}_original.wav"
                suff_rel = f"audio/{slug}/clip_{i:04d}_sufficient.wav"
                write_wav(out / orig_rel, clips[i], sr)
                write_wav(out / suff_rel, batch["sufficient"][j], rate)
                lab = arrays.label_names[arrays.original[fi, i]]
                agree = [g for gi, g in enumerate(arrays.model_names) if arrays.labels[fi, gi, i] == arrays.original[fi, i] and gi != fi]
                # a trivial clip's "sufficient signal" is silence: no transfer source, nobody "agrees"
                if batch["empty_is_target"][j]:
                    verdict = "label given to silence (the empty signal already gets it): not a transfer source"
                else:
                    verdict = f"other models that agree: {', '.join(agree) or 'none'}"
                png = clip_figure(
                    _resampled(clips[i], sr, rate, batch["sufficient"].shape[1]),
                    batch["mask"][j],
                    batch["responsibility"][j],
                    rate,
                    f"{name} · clip {i} · label {lab} · kept {batch['size_fraction'][j]:.1%} of the grid",
                )
                _save_png(out / "figures" / f"clip_{slug}_{i:04d}.png", png)
                blocks.append(_CARD.render(
                    i=i,
                    file=Path(arrays.paths[i]).name,
                    label=lab,
                    size=float(batch["size_fraction"][j]),
                    energy=float(batch["energy_fraction"][j]),
                    verdict=verdict,
                    orig_src=_href(orig_rel),
                    suff_src=_href(suff_rel),
                    alt=f"clip {i} of {name}",
                    png=_data_uri(png),
                ))
                shown += 1
        if shown == 0:
            blocks.append(_NO_CLIP)
    return "\n".join(blocks)


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
    if "pairs" in tables:
        mat = _pivot(tables["pairs"], names, "rate")
        w = max(len(n) for n in names) + 2
        lines.append("Transfer matrix T(f→g) (rows: source f, columns: listener g)")
        lines.append(" " * w + "".join(f"{n[:9]:>10}" for n in names))
        for f, n in enumerate(names):
            lines.append(f"{n:<{w}}" + "".join(f"{v:>10.2f}" if not np.isnan(v) else f"{'–':>10}" for v in mat[f]))
    if "task" in tables:
        t = tables["task"].iloc[0].to_dict()
        lines.append(
            "mean over ordered pairs f≠g: "
            + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in t.items())
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
        lines.append(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if "metrics" in tables and "information" in tables:
        info = tables["information"]
        off = info[info["source"] != info["target"]]
        mi = off.groupby("source")["mi_source"].mean()
        met = tables["metrics"].set_index("model")
        lines.append("Accuracy beside mean transferred MI (bits):")
        for n in names:
            lines.append(f"  {n:<16} accuracy {met.loc[n, 'accuracy']:.3f}   MI {mi.get(n, float('nan')):.3f}")
    lines += _data_notes(root)
    return "\n".join(lines)


def _data_notes(root: Path) -> list[str]:
    """What the console must say about the data: files left out, clips of classes no model has."""
    p = root / "summary.json"
    if not p.is_file():
        return []
    try:
        summary = json.loads(p.read_text())
    except (OSError, ValueError):
        return []
    lines = []
    failed = int(summary.get("failed_files", 0))
    if failed:
        lines.append(f"{failed} data file(s) left out of the study: see {root / 'data' / 'failures.csv'}")
    unknown = summary.get("unknown_class_clips") or {}
    if unknown:
        lines.append(
            f"{sum(unknown.values())} clip(s) of a class no model has ("
            + ", ".join(f"{c!r}: {k}" for c, k in unknown.items())
            + "): no true label; the tables use the clips of known classes"
        )
    return lines
