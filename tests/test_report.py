"""The report (issue 16): settings, versions and run time on the page, every column defined, true
labels on the cards, every clip reachable (per-model and per-clip pages with who accepts whose),
no -0.000, a self-contained folder, figures in the domain's own settings and units, a one-model
study that says transfer needs two models; and the pages in a real headless browser."""

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from jsuff.app.cli import main
from jsuff.app.report import column_definitions, draw_clip_figure, format_number, html_table, summary_text, write_report
from jsuff.app.study import config_from_dict, run_study
from jsuff.app.tables import read_tables
from jsuff.app.versions import software_versions
from jsuff.domains import RFFT, STFT, Time
from jsuff.models import InputPolicy, build_model, save_model

SR = 8000
DUR = 0.25
CLASSES = ["low", "high"]
BANDS = [[200, 500], [2200, 3000]]
STFT_OPTS = {"n_fft": 128, "hop": 32, "window": "hamming"}


def _tone(hz: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(SR * DUR)) / SR
    return (0.5 * np.sin(2 * np.pi * hz * rng.uniform(0.97, 1.03) * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Three clips of two classes; a model at the study rate and one at 16 kHz."""
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(4)
    for cls, hz, k in (("low", 300.0, 2), ("high", 2600.0, 1)):
        (root / "data" / cls).mkdir(parents=True)
        for j in range(k):
            sf.write(root / "data" / cls / f"{cls}_{j}.wav", _tone(hz, rng), SR)
    for name, sr in (("eight", SR), ("sixteen", 16000)):
        m = build_model("bandpower", {"bands": BANDS, "sample_rate": sr}, sample_rate=sr, labels=CLASSES,
                        input=InputPolicy(length=int(sr * DUR)))
        save_model(m, root / "models" / name)
    return root


def _raw(ws: Path, models, **over):
    raw = {
        "task": "two tones",
        "seed": 7,
        "models": [str(ws / "models" / m) for m in models],
        "data": {"path": str(ws / "data"), "duration": DUR, "sample_rate": SR},
        "search": {"iters": 2, "tree_depth": 3, "min_box_size": 8},
        "clips_per_batch": 3,
        "n_boot": 20,
    }
    return raw | over


@pytest.fixture(scope="module")
def stft_study(workspace):
    """Two models in an STFT domain with its own settings; one clip per model on the index."""
    out = workspace / "stft"
    cfg = config_from_dict(_raw(workspace, ["eight", "sixteen"], domain={"name": "stft", **STFT_OPTS}), workspace)
    arrays = run_study(cfg, out, quiet=True)
    page = write_report(out, max_clips=1)
    return out, arrays, page


class _Page(HTMLParser):
    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    @property
    def plain(self) -> str:
        return " ".join(" ".join(self.text).split())


def test_settings_versions_and_runtime_are_on_the_page(stft_study):
    out, _, page = stft_study
    text = _Page(page.read_text()).plain
    for needle in ("seed 7", "n_fft 128", "hop 32", "window hamming", "iters 2", "tree_depth 3", "min_box_size 8",
                   "clip duration 0.25 s (2000 samples at 8000 Hz)", "mode sufficient", "n_boot 20", "run time"):
        assert needle in text, needle
    summary = json.loads((out / "summary.json").read_text())
    assert summary["versions"] == software_versions()
    for name in ("jsuff", "jax", "flax", "python"):
        assert f"{name} {summary['versions'][name]}" in text, name
    assert f"{summary['total_seconds_this_run']:.1f} s in all" in text
    assert "self-contained" in text and "relative path" in text


def test_every_column_is_defined_next_to_the_tables(stft_study):
    out, _, page = stft_study
    tables = read_tables(out)
    columns = [c for name, t in tables.items() if name != "explanations" for c in t.columns]
    assert {"lo", "hi", "agree_rate", "correct_n", "mi_mm_source", "outgoing_lo"} <= set(columns)
    definitions, undefined = column_definitions(columns)
    assert undefined == []
    html = page.read_text()
    block = html[html.index("id='definitions'"):html.index("id='clips'")]
    assert html.index("id='tables'") < html.index("id='definitions'")
    for head, text in definitions:
        assert f"<dt>{head}</dt>" in block and text.replace("'", "&#39;") in block, head
    # an unexplained column is caught, so a new statistic cannot reach the page undefined
    assert column_definitions(["rate", "frobnication"])[1] == ["frobnication"]


def test_no_negative_zero_anywhere(stft_study):
    assert (format_number(-1e-12), format_number(-0.0), format_number(-0.0004), format_number(-0.0006), format_number(-0.0049, 2)) == ("0.000", "0.000", "0.000", "-0.001", "0.00")
    html = html_table(pd.DataFrame({"h_source": [-0.0, -1e-17, 0.5], "mi_mm": [-0.25, 0.0, -2e-9]}))
    assert "-0.000" not in html and "-0.250" in html
    out, _, page = stft_study
    assert not re.search(r"-0\.0+(?![0-9])", page.read_text())
    assert not re.search(r"-0\.0+(?![0-9])", summary_text(out))


def test_cards_clip_pages_and_model_pages_reach_every_clip(stft_study):
    out, arrays, page = stft_study
    index = _Page(page.read_text())
    text = index.plain
    n = len(arrays.paths)
    for name in arrays.model_names:
        verified = int(arrays.valid[list(arrays.model_names).index(name)].sum())
        assert f"1 of {verified} clips with a verified sufficient signal shown ({n} clips in all)" in text
    assert "true label: low" in text or "true label: high" in text
    links = [a["href"] for t, a in index.tags if t == "a" and "href" in a]
    assert {f"clips/clip_{i:04d}.html" for i in range(n)} <= set(links)
    for slug in ("eight", "sixteen"):
        assert f"models/{slug}.html" in links
        model_page = _Page((out / "report" / "models" / f"{slug}.html").read_text())
        assert model_page.plain.count("true label:") == n
        audio = [a["src"] for t, a in model_page.tags if t == "audio"]
        assert len(audio) == 2 * int(arrays.valid[0 if slug == "eight" else 1].sum())
    # one clip across all models: the original, each model's sufficient signal, who accepts whose
    clip = _Page((out / "report" / "clips" / "clip_0000.html").read_text())
    sources = [a["src"] for t, a in clip.tags if t == "audio"]
    assert sources[0] == "../audio/original/clip_0000.wav"
    assert {"../audio/eight/clip_0000_sufficient.wav", "../audio/sixteen/clip_0000_sufficient.wav"} <= set(sources)
    assert "Who accepts whose" in clip.plain
    for f, name in enumerate(arrays.model_names):
        for g in range(2):
            if arrays.valid[f, 0]:
                mark = "✓" if arrays.labels[f, g, 0] == arrays.original[f, 0] else "✗"
                assert f"{mark} {arrays.label_names[arrays.labels[f, g, 0]]}" in clip.plain


def test_report_folder_is_self_contained(stft_study, tmp_path):
    out, _, _ = stft_study
    copy = tmp_path / "elsewhere" / "copied"
    shutil.copytree(out / "report", copy)  # the folder alone, without the study beside it
    pages = sorted(copy.rglob("*.html"))
    assert len(pages) == 1 + 2 + 3  # index, a page per model, a page per clip
    for p in pages:
        for tag, attrs in _Page(p.read_text()).tags:
            for key in ("src", "href"):
                url = attrs.get(key)
                if not url or url.startswith(("data:image/png;base64,", "#")):
                    continue
                assert not urlparse(url).scheme and not url.startswith("/"), (p.name, url)
                target = (p.parent / unquote(url)).resolve()
                assert target.is_relative_to(copy.resolve()) and target.is_file(), (p.name, url)


def test_rewriting_the_report_leaves_only_its_own_files(stft_study):
    out, _, _ = stft_study
    stale = out / "report" / "audio" / "eight" / "clip_0000_original.wav"  # an older layout's file
    shutil.copy(out / "report" / "audio" / "original" / "clip_0000.wav", stale)
    write_report(out, max_clips=2)
    assert not stale.exists()
    assert len(list((out / "report" / "figures").glob("clip_*.png"))) == 4
    write_report(out, max_clips=1)
    assert len(list((out / "report" / "figures").glob("clip_*.png"))) == 2


# ---------------------------------------------------------------------------------------------
# Figures: the domain's own settings, seconds and Hz


def _signal():
    x = _tone(300.0, np.random.default_rng(0))
    return x, np.random.default_rng(1)


def test_stft_figure_uses_the_domains_settings_and_units():
    x, rng = _signal()
    d = STFT(n_fft=256, hop=100, window="hamming")
    grid = d.grid_shape(x.size)
    fig = draw_clip_figure(x, rng.random(grid) > 0.7, rng.random(grid).astype(np.float32), SR, "t", d)
    axes = [a for a in fig.axes if a.get_label() != "<colorbar>"][:3]
    assert [a.get_ylabel() for a in axes] == ["frequency (Hz)"] * 3 and axes[-1].get_xlabel() == "time (s)"
    for a in axes:
        (im,) = a.get_images()
        assert im.get_array().shape == grid  # the domain's own grid, not a fixed 512/128 STFT
        left, right, bottom, top = im.get_extent()
        assert right == pytest.approx((grid[1] - 0.5) * 100 / SR) and top == pytest.approx((grid[0] - 0.5) * SR / 256)
    title = fig.get_suptitle()
    assert "n_fft=256" in title and "hop=100" in title and "hamming" in title


def test_time_figure_has_amplitude_and_seconds_and_no_empty_panel():
    x, rng = _signal()
    d = Time(segment=50)
    grid = d.grid_shape(x.size)
    mask = np.zeros(grid, bool)
    mask[10:20] = True
    fig = draw_clip_figure(x, mask, rng.random(grid).astype(np.float32), SR, "t", d)
    assert len(fig.axes) == 2
    wave, resp = fig.axes
    assert wave.get_ylabel() == "amplitude" and resp.get_xlabel() == "time (s)"
    assert resp.get_xlim() == pytest.approx((0, DUR))
    clip, suff = wave.get_lines()
    np.testing.assert_allclose(clip.get_ydata(), x)
    np.testing.assert_allclose(clip.get_xdata()[[0, -1]], [0, (x.size - 1) / SR])
    kept = np.flatnonzero(suff.get_ydata())
    assert kept.min() >= 10 * 50 and kept.max() < 20 * 50  # the sufficient signal: kept segments only
    assert all(a.has_data() for a in fig.axes)


def test_rfft_figure_over_frequency_in_hz():
    x, rng = _signal()
    grid = RFFT().grid_shape(x.size)
    fig = draw_clip_figure(x, rng.random(grid) > 0.9, rng.random(grid).astype(np.float32), SR, "t", RFFT())
    assert fig.axes[-1].get_xlabel() == "frequency (Hz)" and fig.axes[-1].get_xlim() == pytest.approx((0, SR / 2))
    assert all(a.has_data() for a in fig.axes)
    with pytest.raises(ValueError, match="do not fit the stft grid"):
        draw_clip_figure(x, np.ones(grid, bool), np.ones(grid, np.float32), SR, "t", STFT())


# ---------------------------------------------------------------------------------------------
# One model: it runs, and the console and the page say that transfer needs two


def test_one_model_study_says_transfer_needs_two_models(workspace, tmp_path, capsys):
    toml = tmp_path / "one.toml"
    toml.write_text(
        f'task = "solo"\nmodels = ["{workspace / "models" / "eight"}"]\nclips_per_batch = 1\nn_boot = 20\n'
        f'[data]\npath = "{workspace / "data"}"\nduration = {DUR}\nsample_rate = {SR}\n'
        '[domain]\nname = "time"\nsegment = 40\n[search]\niters = 2\ntree_depth = 3\nmin_box_size = 8\n'
    )
    assert main(["study", str(toml), "--out", str(tmp_path / "run")]) == 0
    cap = capsys.readouterr()
    assert "jsuff: note: Transfer needs at least two models: this study has one (eight)" in cap.err
    assert "Transfer needs at least two models" in cap.out  # the summary after the run says it too
    assert "accuracy" in cap.out
    # off a terminal (pytest's capture), progress comes as lines with done/total and an ETA
    progress = [line for line in cap.err.splitlines() if line.startswith("explaining:")]
    assert progress[0] == "explaining: 0/3 clips (0%)" and progress[-1].startswith("explaining: 3/3 clips (100%)")
    assert any("ETA" in line for line in progress)
    page = _Page((tmp_path / "run" / "report" / "index.html").read_text())
    assert "Transfer needs at least two models: this study has one (eight)" in page.plain
    assert "segment 40" in page.plain
    assert "Transfer matrix" not in page.plain


# ---------------------------------------------------------------------------------------------
# A real headless browser (Debian's chromium + chromedriver)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _browser_or_skip():
    missing = [n for n, p in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not p]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide {', '.join(missing)} (.ci/run installs them)")
        pytest.skip(f"browser test needs {', '.join(missing)}")


@pytest.fixture(scope="module")
def browser():
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--allow-file-access-from-files", "--window-size=1200,900",
                 "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


_AUDIO_STATE = """
const done = arguments[arguments.length - 1];
const audio = Array.from(document.querySelectorAll('audio'));
Promise.all(audio.map(a => new Promise(ok => {
  if (a.readyState >= 1 || a.error) return ok();
  a.addEventListener('loadedmetadata', ok, {once: true});
  a.addEventListener('error', ok, {once: true});
  a.load();
}))).then(() => done(audio.map(a => [a.src, a.duration, a.error ? a.error.code : null])));
"""


def _open(driver, page: Path):
    driver.get(page.as_uri())
    driver.set_script_timeout(30)
    audio = driver.execute_async_script(_AUDIO_STATE)
    images = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const images = Array.from(document.images);
        images.forEach(i => { i.loading = 'eager'; });  // the sub-pages load figures lazily, on scrolling
        Promise.all(images.map(i => i.decode().catch(() => null)))
          .then(() => done(images.map(i => [i.complete, i.naturalWidth, i.alt])));""")
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return audio, images, errors


def test_report_in_headless_browser(browser, stft_study):
    out, arrays, page = stft_study
    write_report(out, max_clips=1)
    report = out / "report"
    for p in (page, report / "models" / "sixteen.html", report / "clips" / "clip_0001.html"):
        audio, images, errors = _open(browser, p)
        assert not errors, (p.name, errors)
        assert audio, f"{p.name} has no audio players"
        for src, duration, err in audio:
            assert err is None and duration == pytest.approx(DUR, abs=0.01), (p.name, src, duration, err)
            path = Path(unquote(urlparse(src).path))
            assert path.is_file() and path.resolve().is_relative_to(report.resolve()), src
        assert all(ok and w > 0 for ok, w, _ in images), (p.name, images)
    # the index: the figures, the settings and the definitions; wide tables scroll inside the page
    browser.get(page.as_uri())
    state = browser.execute_script("""
        const wide = Array.from(document.querySelectorAll('.wide'));
        return {
          images: document.images.length,
          settings: document.querySelector('#settings') !== null && document.body.innerText.includes('n_fft'),
          definitions: document.querySelectorAll('dl.defs dt').length,
          scrolls: wide.filter(w => w.scrollWidth > w.clientWidth + 1 && getComputedStyle(w).overflowX === 'auto').length,
          pageWidth: document.documentElement.scrollWidth, viewport: window.innerWidth,
        };""")
    assert state["images"] >= 3 + 2  # transfer, rates, information; a card per model
    assert state["settings"] and state["definitions"] >= 30
    assert state["scrolls"] >= 1, "the widest tables should scroll inside their box"
    assert state["pageWidth"] <= state["viewport"], "a table widens the page instead of scrolling"
