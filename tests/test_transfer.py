"""jsuff.transfer: known-answer matrices, masking, bootstrap coverage, flat-earther screening."""


import jax
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from jsuff import intervals, transfer
from jsuff.transfer import LabelArrayError, flat_earthers, outlier_scores, transfer_analysis


def _random_task(seed=0, m=4, n=50, c=3, p_valid=0.8):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, c, n)
    original = np.where(rng.random((m, n)) < 0.7, true, rng.integers(0, c, (m, n)))
    noise = rng.integers(0, c, (m, m, n))
    labels = np.where(rng.random((m, m, n)) < 0.5, original[:, None, :], noise)
    valid = rng.random((m, n)) < p_valid
    return labels, original, true, valid


def _reference(labels, original, valid, true=None, condition="all"):
    """Plain-loop transfer matrix, counts and aggregates: the definitions written out directly."""
    m, _, n = labels.shape
    t, cnt = np.full((m, m), np.nan), np.zeros((m, m), int)
    for f in range(m):
        for g in range(m):
            hits = 0
            for i in range(n):
                if not valid[f, i]:
                    continue
                if condition == "agree" and original[g, i] != original[f, i]:
                    continue
                if condition == "correct" and original[f, i] != true[i]:
                    continue
                cnt[f, g] += 1
                hits += labels[f, g, i] == original[f, i]
            if cnt[f, g]:
                t[f, g] = hits / cnt[f, g]
    def mean(xs):
        return sum(xs) / len(xs) if xs else np.nan

    task = mean([t[f, g] for f in range(m) for g in range(m) if f != g and cnt[f, g]])
    out = [mean([t[f, g] for g in range(m) if g != f and cnt[f, g]]) for f in range(m)]
    inc = [mean([t[f, g] for f in range(m) if f != g and cnt[f, g]]) for g in range(m)]
    return t, cnt, task, np.array(out), np.array(inc)


# ----------------------------------------------------------------------------------------------
# Known answers
# ----------------------------------------------------------------------------------------------


def test_known_transfer_matrix():
    # Three models, 10 clips, every original label 0: T[f, g] = (clips where g says 0) / 10.
    k = np.array([[10, 7, 2], [5, 10, 0], [10, 3, 10]])
    labels = np.ones((3, 3, 10), int)
    for f in range(3):
        for g in range(3):
            labels[f, g, : k[f, g]] = 0
    r = transfer_analysis(labels, np.zeros((3, 10), int), interval="bootstrap", n_boot=0,
                          model_names=["a", "b", "c"])
    np.testing.assert_allclose(r.matrix, k / 10)
    np.testing.assert_array_equal(r.n, np.full((3, 3), 10))
    np.testing.assert_allclose(r.overall.task_mean.value, (0.7 + 0.2 + 0.5 + 0.0 + 1.0 + 0.3) / 6)
    np.testing.assert_allclose(r.overall.outgoing.value, [0.45, 0.25, 0.65])
    np.testing.assert_allclose(r.overall.incoming.value, [0.75, 0.5, 0.1])
    np.testing.assert_array_equal(r.overall.outgoing.n, [20, 20, 20])
    assert int(r.overall.task_mean.n) == 60
    assert np.isnan(r.overall.matrix.lo).all() and r.given_correct is None


@pytest.mark.parametrize("seed", [0, 1])
def test_conditions_match_a_plain_loop(seed):
    labels, original, true, valid = _random_task(seed)
    r = transfer_analysis(labels, original, valid=valid, true=true, n_boot=0)
    for cond in ("all", "agree", "correct"):
        t, cnt, task, out, inc = _reference(labels, original, valid, true, cond)
        got = r.rates(cond)
        np.testing.assert_allclose(got.matrix.value, t)
        np.testing.assert_array_equal(got.matrix.n, cnt)
        np.testing.assert_allclose(got.task_mean.value, task)
        np.testing.assert_allclose(got.outgoing.value, out)
        np.testing.assert_allclose(got.incoming.value, inc)


def test_agreement_condition_known_case():
    # g = 1 disagrees with f = 0 on the originals of clips 2 and 3, where f's signal also fails.
    original = np.array([[0, 0, 1, 1], [0, 0, 0, 0]])
    labels = np.zeros((2, 2, 4), int)
    labels[0, 0] = original[0]
    labels[1, 1] = original[1]
    labels[1, 0] = [0, 0, 0, 0]
    r = transfer_analysis(labels, original, n_boot=0)
    assert r.matrix[0, 1] == 0.5 and r.given_agree.matrix.value[0, 1] == 1.0
    assert r.given_agree.matrix.n[0, 1] == 2 and r.given_agree.matrix.n[1, 0] == 2


def test_invalid_entries_are_masked_whatever_they_hold():
    labels, original, true, valid = _random_task(2)
    junk = labels.copy()
    junk[np.broadcast_to(~valid[:, None, :], labels.shape)] = -7  # out of range, but never read
    a = transfer_analysis(labels, original, valid=valid, true=true, n_boot=50, seed=1)
    b = transfer_analysis(junk, original, valid=valid, true=true, n_boot=50, seed=1)
    pd.testing.assert_frame_equal(a.to_frame(), b.to_frame())
    # A source with no valid clip has NaN cells and is left out of the aggregates.
    valid2 = valid.copy()
    valid2[1] = False
    r = transfer_analysis(junk, original, valid=valid2, n_boot=0)
    assert np.isnan(r.matrix[1]).all() and (r.n[1] == 0).all()
    assert np.isnan(r.overall.outgoing.value[1])
    t, _, task, _, inc = _reference(labels, original, valid2)
    np.testing.assert_allclose(r.overall.task_mean.value, task)
    np.testing.assert_allclose(r.overall.incoming.value, inc)


def test_transfer_matrix_jit_equals_eager_and_weights_equal_resampling():
    labels, original, true, valid = _random_task(3)
    eager = transfer.transfer_matrix(labels, original, valid=valid, true=true, condition="correct")
    jitted = jax.jit(transfer.transfer_matrix, static_argnames="condition")(
        labels, original, valid=valid, true=true, condition="correct")
    np.testing.assert_allclose(jitted[0], eager[0])
    np.testing.assert_allclose(jitted[1], eager[1])
    # Bootstrap weights are the counts of the index resamples: weighting equals resampling.
    idx = transfer.bootstrap_indices(labels.shape[2], 3, seed=5)
    w = transfer.bootstrap_weights(labels.shape[2], 3, seed=5)
    mask = transfer.condition_mask(original, valid)
    hits, n = transfer.transfer_counts(labels, original, mask, w)
    for b in range(3):
        i = idx[b]
        h_b, n_b = transfer.transfer_counts(labels[..., i], original[:, i], mask[..., i])
        np.testing.assert_allclose(hits[b], h_b)
        np.testing.assert_allclose(n[b], n_b)


# ----------------------------------------------------------------------------------------------
# Bootstrap intervals
# ----------------------------------------------------------------------------------------------


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    labels, original, true, valid = _random_task(4)
    kw = dict(valid=valid, true=true, interval="bootstrap", n_boot=300)
    a = transfer_analysis(labels, original, seed=7, **kw)
    b = transfer_analysis(labels, original, seed=7, **kw)
    c = transfer_analysis(labels, original, seed=8, **kw)
    pd.testing.assert_frame_equal(a.to_frame(), b.to_frame())
    assert not a.to_frame().equals(c.to_frame())
    for cond in a.conditions:
        for e in a.rates(cond):
            ok = np.isfinite(e.value)
            assert (e.lo[ok] <= e.value[ok] + 1e-12).all()
            assert (e.value[ok] <= e.hi[ok] + 1e-12).all()
    assert 0.0 < a.overall.task_mean.hi - a.overall.task_mean.lo < 0.3


def test_bootstrap_interval_coverage_in_a_seeded_simulation():
    # Every off-diagonal cell of 6 models succeeds with probability 0.3 on each of 80 clips,
    # independently; over 20 simulated tasks (600 cells) the 90% percentile interval should
    # cover 0.3 about 90% of the time (0.91 with these seeds).
    rng = np.random.default_rng(0)
    p, m, n, sims = 0.3, 6, 80, 20
    off = ~np.eye(m, dtype=bool)
    covered = []
    for s in range(sims):
        labels = (rng.random((m, m, n)) >= p).astype(int)  # label 0 (= the original) w.p. p
        e = transfer_analysis(labels, np.zeros((m, n), int), interval="bootstrap", n_boot=300,
                              confidence=0.9, seed=s).overall.matrix
        covered.append(((e.lo <= p) & (p <= e.hi))[off])
    assert 0.86 <= np.mean(covered) <= 0.94


def test_percentile_interval_helpers():
    lo, hi = transfer.percentile_interval(np.array([[np.nan, 1.0], [np.nan, 3.0]]), 0.5)
    assert np.isnan(lo[0]) and np.isnan(hi[0]) and lo[1] == 1.5 and hi[1] == 2.5
    w = transfer.bootstrap_weights(7, 4, seed=2)
    assert w.shape == (4, 7) and (w.sum(1) == 7).all()
    with pytest.raises(ValueError, match="confidence"):
        transfer.percentile_interval(np.ones((3,)), 1.5)


# ----------------------------------------------------------------------------------------------
# Small-sample intervals (the default) and trivial explanations
# ----------------------------------------------------------------------------------------------


def _loop_moments(hit, mask, cells):
    """The mean of the cell rates over ``cells`` and its clip-level variance, written as loops."""
    rates = {c: hit[c][mask[c]].mean() for c in cells if mask[c].any()}
    n = {c: mask[c].sum() for c in rates}
    value = sum(rates.values()) / len(rates)
    clips = [i for i in range(hit.shape[-1]) if any(mask[c][i] for c in rates)]
    u = [sum((hit[c][i] - rates[c]) / n[c] for c in rates if mask[c][i]) / len(rates) for i in clips]
    var = len(clips) / (len(clips) - 1) * sum(v * v for v in u)
    return value, var, len(clips), sum(n.values())


def test_intervals_against_scipy_and_a_loop():
    labels, original, true, valid = _random_task(7, m=3, n=25)
    r = transfer_analysis(labels, original, valid=valid)
    hit = labels == original[:, None, :]
    for f in range(3):
        for g in range(3):
            n = int(valid[f].sum())
            k = int(hit[f, g][valid[f]].sum())
            ci = scipy.stats.binomtest(k, n).proportion_ci(0.95, method="exact")
            np.testing.assert_allclose([r.overall.matrix.lo[f, g], r.overall.matrix.hi[f, g]], [ci.low, ci.high],
                                       atol=1e-12)
    mask = np.broadcast_to(valid[:, None, :], hit.shape)
    off = [(f, g) for f in range(3) for g in range(3) if f != g]
    groups = {"task_mean": [off], "outgoing": [[c for c in off if c[0] == f] for f in range(3)],
              "incoming": [[c for c in off if c[1] == g] for g in range(3)]}
    for kind, sets in groups.items():
        e = getattr(r.overall, kind)
        for j, cells in enumerate(sets):
            value, var, clips, events = _loop_moments(hit, mask, cells)
            lo, hi, _ = intervals.effective_n_interval(value, var, clips, events)
            got = [np.ravel(a)[j] for a in (e.value, e.lo, e.hi, e.n)]
            np.testing.assert_allclose(got, [value, lo, hi, events], rtol=1e-12)
    assert r.overall.matrix.method == "clopper_pearson" and r.overall.incoming.method == "korn_graubard"


def test_clip_variance_agrees_with_the_jackknife():
    # the linearised variance of a mean of cell rates is the jackknife's to first order
    rng = np.random.default_rng(8)
    m, n = 4, 400
    difficulty = rng.standard_normal(n)
    hit = rng.random((m, m, n)) < 1 / (1 + np.exp(-(1.0 + difficulty)))
    mask = np.broadcast_to(rng.random((m, 1, n)) < 0.9, hit.shape)
    n_cell = mask.sum(-1)
    value, var, _, _ = transfer._aggregate_moments(hit, mask, n_cell, (hit & mask).sum(-1) / n_cell)
    keep = ~np.eye(n, dtype=bool)
    loo = np.stack([transfer._aggregate_moments(hit[..., k], mask[..., k], mask[..., k].sum(-1),
                                                (hit & mask)[..., k].sum(-1) / mask[..., k].sum(-1))[0]
                    for k in keep])
    jack = (n - 1) / n * ((loo - loo.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(var, jack, rtol=0.03)


def test_rate_estimates_take_batch_axes():
    tasks = [_random_task(s, m=3, n=20) for s in range(3)]
    hit = np.stack([lab == orig[:, None, :] for lab, orig, _, _ in tasks])
    mask = np.stack([np.broadcast_to(v[:, None, :], (3, 3, 20)) for _, _, _, v in tasks])
    batched = transfer.rate_estimates(hit, mask, interval="wilson")
    for b, (lab, orig, _, v) in enumerate(tasks):
        one = transfer_analysis(lab, orig, valid=v, interval="wilson").overall
        for got, want in zip(batched, one):
            for a, w in zip(got[:4], want[:4]):
                np.testing.assert_allclose(np.asarray(a)[b], w)
            assert got.method == want.method
    assert batched.matrix.method == "wilson" and batched.task_mean.method == "wilson_effective_n"
    with pytest.raises(ValueError, match="clopper_pearson"):
        transfer.rate_estimates(hit, mask, interval="bootstrap")
    with pytest.raises(ValueError, match="unknown interval"):
        transfer_analysis(*tasks[0][:2], interval="exact")


def test_a_full_cell_is_not_certain():
    # 12 of 12: the percentile bootstrap said [1, 1]; the exact interval does not
    labels = np.zeros((3, 3, 12), int)
    r = transfer_analysis(labels, np.zeros((3, 12), int))
    np.testing.assert_allclose(r.overall.matrix.lo, 0.025 ** (1 / 12))
    assert 0.6 < float(r.overall.task_mean.lo) < 0.74 and float(r.overall.task_mean.hi) == 1.0
    boot = transfer_analysis(labels, np.zeros((3, 12), int), interval="bootstrap", n_boot=200)
    assert (boot.overall.matrix.lo == 1.0).all() and boot.overall.matrix.method == "percentile_bootstrap"


def test_trivial_clips_are_not_sources_by_default():
    labels, original, true, valid = _random_task(9, m=3, n=40)
    trivial = np.random.default_rng(9).random((3, 40)) < 0.25
    empty = np.array([2, 0, 1])
    r = transfer_analysis(labels, original, valid=valid, true=true, trivial=trivial, empty=empty)
    plain = transfer_analysis(labels, original, valid=valid & ~trivial, true=true)
    pd.testing.assert_frame_equal(r.to_frame(), plain.to_frame())
    both = transfer_analysis(labels, original, valid=valid, true=true, trivial=trivial, empty=empty,
                             include_trivial=True)
    pd.testing.assert_frame_equal(both.to_frame(), transfer_analysis(labels, original, valid=valid,
                                                                     true=true).to_frame())
    counts = (trivial & valid).sum(1)
    names = ["lo", "mid", "hi"]
    models = r.models_frame(names)
    assert models.trivial.tolist() == counts.tolist() and models.silence_label.tolist() == ["hi", "lo", "mid"]
    assert models.signals.tolist() == (valid & ~trivial).sum(1).tolist() and not models.trivial_counted.any()
    assert both.models_frame().trivial_counted.all() and both.models_frame().signals.tolist() == valid.sum(1).tolist()
    pairs = r.pairs_frame()
    assert pairs.source_trivial.tolist() == np.repeat(counts, 3).tolist()
    assert pairs.source_silence_label.tolist() == np.repeat(empty, 3).tolist()
    task = r.task_frame(names)
    assert task.trivial.tolist() == [counts.sum()] * 3 and (task.interval == "korn_graubard").all()
    assert task.trivial_by_model[0] == "; ".join(
        f"model_{k}: {counts[k]} (silence -> {names[empty[k]]})" for k in range(3))
    fe = flat_earthers(r)
    assert fe.trivial.tolist() == counts.tolist() and fe.empty_label.tolist() == empty.tolist()
    # without empty labels the silence label is unknown, not made up
    assert r.inputs.silence_labels() == [2, 0, 1]
    assert transfer_analysis(labels, original).pairs_frame().source_silence_label.isna().all()
    with pytest.raises(LabelArrayError, match="every valid sufficient signal is trivial"):
        transfer_analysis(labels, original, trivial=np.ones((3, 40), bool))
    with pytest.raises(LabelArrayError, match="trivial has shape"):
        transfer_analysis(labels, original, trivial=trivial[:2])
    with pytest.raises(LabelArrayError, match="empty.*outside the label range"):
        transfer_analysis(labels, original, empty=[0, 1, 7], num_classes=3)


# ----------------------------------------------------------------------------------------------
# Frames
# ----------------------------------------------------------------------------------------------


def test_frames_are_tidy_and_match_the_arrays():
    labels, original, true, valid = _random_task(5, m=3)
    r = transfer_analysis(labels, original, valid=valid, true=true, n_boot=100,
                          model_names=["x", "y", "z"])
    long = r.to_frame()
    assert len(long) == 3 * 9 and set(long.condition) == {"all", "agree", "correct"}
    cell = long[(long.condition == "agree") & (long.source == "y") & (long.target == "z")].iloc[0]
    assert cell.rate == r.given_agree.matrix.value[1, 2] and cell.n == r.given_agree.matrix.n[1, 2]
    pairs = r.pairs_frame()
    assert len(pairs) == 9 and pairs.self.sum() == 3
    assert {"rate", "lo", "hi", "n", "agree_rate", "correct_hi", "correct_n", "interval"} <= set(pairs)
    np.testing.assert_allclose(pairs.rate.to_numpy().reshape(3, 3), r.matrix)
    models = r.models_frame()
    assert models.model.tolist() == ["x", "y", "z"]
    np.testing.assert_allclose(models.incoming, r.overall.incoming.value)
    np.testing.assert_allclose(models.correct_outgoing_lo, r.given_correct.outgoing.lo)
    np.testing.assert_array_equal(models.signals, valid.sum(1))
    task = r.task_frame()
    assert task.condition.tolist() == ["all", "agree", "correct"] and (task.pairs <= 6).all()
    assert task["mean"][0] == r.overall.task_mean.value
    no_true = transfer_analysis(labels, original, valid=valid, n_boot=0)
    assert "correct_rate" not in no_true.pairs_frame() and len(no_true.task_frame()) == 2
    with pytest.raises(ValueError, match="needs the true labels"):
        no_true.rates("correct")


# ----------------------------------------------------------------------------------------------
# Flat-earthers
# ----------------------------------------------------------------------------------------------


def _task_with_flat_earther(seed=0, m=6, n=60, c=4):
    """Five models that mostly hear each other's signals; model 5 answers at random."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, c, n)
    original = np.where(rng.random((m, n)) < 0.9, base, rng.integers(0, c, (m, n)))
    noise = rng.integers(0, c, (m, m, n))
    labels = np.where(rng.random((m, m, n)) < 0.75, original[:, None, :], noise)
    original[5] = rng.integers(0, c, n)
    labels[:, 5] = rng.integers(0, c, (m, n))
    labels[5, 5] = original[5]
    labels[5, :5] = rng.integers(0, c, (5, n))
    return labels, original


@pytest.mark.parametrize("method", ["mad", "loo"])
def test_flat_earther_is_found_with_its_statistics(method):
    labels, original = _task_with_flat_earther()
    df = flat_earthers(transfer_analysis(labels, original, n_boot=0), method=method)
    assert df.flat_earther.tolist() == [False] * 5 + [True]
    row = df.iloc[5]
    assert row.incoming_outlier and row.consensus_outlier and row.original_consensus_outlier
    assert row.incoming_z < -3.5 and row.consensus < 0.5 and not row.degenerate
    assert "low incoming" in row.reasons and "low consensus" in row.reasons
    # The statistics are reported, not only the flags.
    cols = {"outgoing", "outgoing_z", "incoming_n", "consensus", "consensus_z",
            "original_consensus", "dominant_label", "dominant_fraction", "empty_label",
            "degenerate", "reasons"}
    assert cols <= set(df)
    # The threshold is a parameter: high enough, nothing is flagged.
    assert not flat_earthers(transfer_analysis(labels, original, n_boot=0), method=method,
                             threshold=1e9).flat_earther.any()


def test_degenerate_model_and_empty_signal():
    labels, original = _task_with_flat_earther(1)
    labels[:, 2] = 1  # model 2 says 1 to every signal, every clip and the empty signal
    original[2] = 1
    inputs = transfer.check_inputs(labels, original)
    empty = np.array([0, 3, 1, 2, 0, 1])
    df = flat_earthers(inputs, empty=empty)
    row = df.iloc[2]
    assert row.degenerate and row.dominant_label == 1 and row.dominant_fraction == 1.0
    assert row.label_n == 6 * 60 + 60 + 1 and row.empty_label == 1 and row.empty_is_dominant
    assert "degenerate" in row.reasons
    assert not df.degenerate.drop(2).any()
    assert flat_earthers(inputs, degenerate_fraction=1.0).degenerate[2]
    assert pd.isna(flat_earthers(inputs).empty_label).all()


def test_consensus_definition_hand_case():
    # One clip; on every source's signal the four models say 0, 0, 1, 1. Model 0's others say
    # 0, 1, 1: consensus 1, model 0 disagrees. Model 2's others say 0, 0, 1: consensus 0, model
    # 2 disagrees. By symmetry every model scores 0.
    labels = np.array([0, 0, 1, 1])[None, :, None].repeat(4, 0)
    original = np.array([[0], [0], [1], [1]])
    df = flat_earthers(transfer.check_inputs(labels, original))
    np.testing.assert_allclose(df.consensus, 0.0)
    labels3 = np.array([0, 1, 2])[None, :, None].repeat(3, 0)
    df3 = flat_earthers(transfer.check_inputs(labels3, np.array([[0], [1], [2]])))
    np.testing.assert_allclose(df3.consensus, 0.0)  # others disagree with each other and with m
    labels_tie = np.array([0, 0, 1])[None, :, None].repeat(3, 0)
    df_tie = flat_earthers(transfer.check_inputs(labels_tie, np.array([[0], [0], [1]])))
    # Model 0: others {0, 1} tie -> 1/2. Model 1: same. Model 2: others {0, 0} -> 0.
    np.testing.assert_allclose(df_tie.consensus, [0.5, 0.5, 0.0])


def test_outlier_scores():
    np.testing.assert_allclose(outlier_scores([1.0, 2.0, 3.0, 4.0, 100.0]),
                               (np.array([1, 2, 3, 4, 100]) - 3) / (1.482602218505602 * 1.0))
    # MAD = 0: the mean absolute deviation takes over; all equal: zeros.
    z = outlier_scores([0.5, 0.5, 0.5, 0.5, 0.1])
    np.testing.assert_allclose(z, [0, 0, 0, 0, -0.4 / (1.2533141373155001 * 0.08)])
    np.testing.assert_array_equal(outlier_scores([0.2, 0.2, 0.2]), [0.0, 0.0, 0.0])
    loo = outlier_scores([1.0, 2.0, 3.0, 10.0], method="loo")
    np.testing.assert_allclose(loo[3], (10 - 2) / 1.0)
    assert outlier_scores([1.0, 1.0, 1.0, 2.0], method="loo")[3] == np.inf
    assert np.isnan(outlier_scores([np.nan, 1.0, 2.0, 3.0])[0])
    with pytest.raises(ValueError, match="unknown outlier method"):
        outlier_scores([1.0, 2.0], method="zscore")


def test_tail_selects_the_direction():
    labels, original = _task_with_flat_earther()
    r = transfer_analysis(labels, original, n_boot=0)
    assert flat_earthers(r, tail="lower").flat_earther[5]
    upper = flat_earthers(r, tail="upper")
    assert not upper.incoming_outlier[5] and not upper.consensus_outlier[5]


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors():
    labels, original, true, valid = _random_task(6, m=3, n=5)
    with pytest.raises(LabelArrayError, match=r"labels must be \[M, M, N\]"):
        transfer_analysis(labels[:2], original)
    with pytest.raises(LabelArrayError, match=r"original has shape \[3, 4\], expected \[3, 5\]"):
        transfer_analysis(labels, original[:, :4])
    with pytest.raises(LabelArrayError, match=r"valid has shape"):
        transfer_analysis(labels, original, valid=valid[:2])
    with pytest.raises(LabelArrayError, match="true has shape"):
        transfer_analysis(labels, original, true=true[:3])
    bad = labels.copy()
    bad[0, 1, 2] = 9
    msg = r"labels\[0, 1, 2\] = 9 is outside the label range \[0, 3\)"
    with pytest.raises(LabelArrayError, match=msg):
        transfer_analysis(bad, original, num_classes=3)
    with pytest.raises(LabelArrayError, match="original.*outside the label range"):
        transfer_analysis(labels, original - 1)
    with pytest.raises(LabelArrayError, match="every entry of valid is False"):
        transfer_analysis(labels, original, valid=np.zeros_like(valid))
    with pytest.raises(LabelArrayError, match="integer label array"):
        transfer_analysis(labels.astype(float), original)
    with pytest.raises(LabelArrayError, match="boolean mask"):
        transfer_analysis(labels, original, valid=valid.astype(int))
    with pytest.raises(LabelArrayError, match="at least 2 models"):
        transfer_analysis(labels[:1, :1], original[:1])
    with pytest.raises(LabelArrayError, match="unique"):
        transfer_analysis(labels, original, model_names=["a", "a", "b"])
    with pytest.raises(LabelArrayError, match="at least 3 models"):
        flat_earthers(transfer_analysis(labels[:2, :2], original[:2], n_boot=0))
    with pytest.raises(LabelArrayError, match="empty has shape"):
        flat_earthers(transfer_analysis(labels, original, n_boot=0), empty=[0, 1])
    with pytest.raises(ValueError, match="unknown condition"):
        transfer.condition_mask(original, valid, condition="both")
