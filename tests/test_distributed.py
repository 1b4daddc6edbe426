"""One study run by several processes (jax.distributed, its own coordinator on 127.0.0.1): the
units are shared out, a killed run resumes, and the result equals one process's bit for bit; the
folder lock lets a run's own processes in and keeps a foreign run out."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jsuff._files import LOCK_NAME, folder_lock
from jsuff.app.config import StudyError
from jsuff.app.distributed import Processes, check_shared_folder, connect
from jsuff.models import InputPolicy, build_model, save_model

ROOT = Path(__file__).resolve().parents[1]
SR = 8000
DUR = 0.25
CLASSES = ["low", "mid", "high"]
TONES = [300.0, 1100.0, 2600.0]
CLIPS = 8  # one clip per unit: 2 models x 8 batches = 16 explanation units, 8 per process


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    rng = np.random.default_rng(1)
    t = np.arange(int(SR * DUR)) / SR
    for i in range(CLIPS):
        c = i % 3
        x = 0.5 * np.sin(2 * np.pi * TONES[c] * rng.uniform(0.95, 1.05) * t) + 0.2 * np.sin(2 * np.pi * TONES[(c + 1) % 3] * t)
        (root / "data" / CLASSES[c]).mkdir(parents=True, exist_ok=True)
        sf.write(root / "data" / CLASSES[c] / f"{i}.wav", (x + 0.01 * rng.standard_normal(t.shape)).astype(np.float32), SR)
    for name, bands in (("wide", [[200, 500], [900, 1400], [2200, 3000]]), ("narrow", [[250, 400], [1000, 1200], [2400, 2800]])):
        m = build_model("bandpower", {"bands": bands, "sample_rate": SR}, sample_rate=SR, labels=CLASSES,
                        input=InputPolicy(length=int(SR * DUR)))
        save_model(m, root / "models" / name)
    (root / "study.toml").write_text(
        'task = "tones"\nseed = 5\nmodels = ["models/wide", "models/narrow"]\nclips_per_batch = 1\nn_boot = 50\n'
        f'[data]\npath = "data"\nduration = {DUR}\nsample_rate = {SR}\n'
        "[search]\niters = 3\ntree_depth = 4\nmin_box_size = 8\n"
    )
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _study(ws: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jsuff", "study", str(ws / "study.toml"), "--out", str(out), "--quiet",
            "--no-report", *extra]


# one CPU device per process, for the single-process reference as for each of the N processes
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


@pytest.fixture(scope="module", autouse=True)
def _compile_once(tmp_path_factory):
    """The runs share JAX's persistent compilation cache, so the single-process runs and process 0
    load what an earlier run compiled (JAX writes it from process 0 only, keyed by device, so
    process 1 compiles its own). Same executables, same results; it only saves time."""
    ENV["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
    ENV["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    yield
    for k in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        ENV.pop(k)


def _start(ws: Path, out: Path, n: int, *extra: str) -> list[subprocess.Popen]:
    port = _free_port()
    return [
        subprocess.Popen(_study(ws, out, "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n),
                                "--process-id", str(i), "--heartbeat-timeout", "5", *extra),
                         cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(n)
    ]


def _finish(procs: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout + stderr))
    return out


def _units(out: Path) -> set[Path]:
    return set((out / "models").glob("*/explain/batch_*.npz"))


def _same_results(a: Path, b: Path) -> None:
    za, zb = np.load(a / "arrays.npz"), np.load(b / "arrays.npz")
    assert sorted(za.files) == sorted(zb.files)
    for k in za.files:
        np.testing.assert_array_equal(za[k], zb[k], err_msg=k)  # bit for bit (NaN where NaN)
    tables = sorted(p.name for p in (a / "tables").glob("*.csv"))
    assert tables == sorted(p.name for p in (b / "tables").glob("*.csv")) and "pairs.csv" in tables
    for name in tables:
        assert (a / "tables" / name).read_bytes() == (b / "tables" / name).read_bytes(), name


def test_two_processes_killed_and_resumed_equal_one_process(workspace, tmp_path):
    single = tmp_path / "single"
    done = subprocess.run(_study(workspace, single), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr

    # two processes; process 1 is killed as soon as its first unit is written (process 1 does the
    # odd units of the list (model, batch): model 0's batches 1, 3, ...)
    out = tmp_path / "two"
    procs = _start(workspace, out, 2)
    first_of_1 = out / "models" / "wide" / "explain" / "batch_00001.npz"
    deadline = time.monotonic() + 180
    while not first_of_1.exists() and procs[1].poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    procs[1].send_signal(signal.SIGKILL)
    (_, _), (rc0, log0) = _finish(procs[1:]) + _finish(procs[:1])  # process 0 stops by itself
    assert procs[1].returncode == -signal.SIGKILL
    assert rc0 != 0, log0
    assert not (out / "arrays.npz").exists(), "the run was not interrupted part-way"
    kept = {p: p.stat().st_mtime_ns for p in _units(out)}
    assert first_of_1 in kept and len(kept) < 2 * CLIPS

    # rerun both with --resume: the study completes, nothing already written is computed again
    results = _finish(_start(workspace, out, 2, "--resume"))
    assert [rc for rc, _ in results] == [0, 0], results
    assert "process 1 of 2: done" in results[1][1]
    assert len(_units(out)) == 2 * CLIPS
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["clips"] == CLIPS
    _same_results(out, single)
    # the lock record names the run and its processes (the file stays, locking nothing)
    assert json.loads((out / LOCK_NAME).read_text())["processes"] == 2


def test_a_foreign_run_is_refused_by_every_process(workspace, tmp_path):
    out = tmp_path / "busy"
    with folder_lock(out, "someone else"):  # another study holds the folder
        results = _finish(_start(workspace, out, 2))
    assert [rc for rc, _ in results] == [2, 2], results
    assert "in use by" in results[0][1] and "someone else" in results[0][1]
    assert "process 0 of 2 failed in the study's lock step" in results[1][1]
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing was written


def test_each_process_checks_that_the_lock_is_its_runs(tmp_path):
    me = Processes(index=1, count=2)
    with pytest.raises(StudyError, match="no lock file .*shared file system"):
        check_shared_folder(tmp_path, "abc", me)
    with folder_lock(tmp_path, "jsuff study", note={"run": "xyz", "processes": 2}):
        with pytest.raises(StudyError, match="a lock of another run .*run xyz"):
            check_shared_folder(tmp_path, "abc", me)
    with folder_lock(tmp_path, "jsuff study", note={"run": "abc", "processes": 2}):
        check_shared_folder(tmp_path, "abc", me)


def test_units_are_shared_out_once_each():
    units = [(m, b) for m in range(3) for b in range(7)]
    for n in (1, 2, 3, 5):
        shares = [Processes(i, n).share(units) for i in range(n)]
        assert sorted(u for s in shares for u in s) == units
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    with pytest.raises(StudyError, match="not in 0..1"):
        Processes(2, 2)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("127.0.0.1:1", None, None), "go together"),
        ((None, 2, 0), "go together"),
        (("127.0.0.1:1", 2, 2), "must be in 0..1"),
    ],
)
def test_process_arguments_are_checked_before_joining(args, match):
    with pytest.raises(StudyError, match=match):
        connect(*args)
