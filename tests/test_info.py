"""jsuff.info: estimators against SciPy / scikit-learn / hand-computed values, eager and jitted."""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from jsuff import info
from jsuff.transfer import LabelArrayError, transfer_matrix

LN2 = math.log(2.0)
close = partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)


def _labels(seed, n, c):
    return np.random.default_rng(seed).integers(0, c, n)


def _h_bits(x, c):
    return scipy.stats.entropy(np.bincount(x, minlength=c), base=2)


# ----------------------------------------------------------------------------------------------
# Against independent references
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_matches_scipy_eager_and_jit(seed):
    x = _labels(seed, 57, 5)
    ref = _h_bits(x, 5)
    np.testing.assert_allclose(info.entropy(x), ref, rtol=1e-5)
    jitted = jax.jit(partial(info.entropy, num_classes=5))
    np.testing.assert_allclose(jitted(jnp.asarray(x)), ref, rtol=1e-5)


def test_miller_madow_entropy_hand_computed():
    x = [0, 0, 1]  # p = (2/3, 1/3), 2 occupied bins, n = 3; a plain list is accepted
    plug = -(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3)
    np.testing.assert_allclose(info.entropy(x), plug, rtol=1e-6)
    mm = plug + 1.0 / (2 * 3 * LN2)
    np.testing.assert_allclose(info.entropy(x, estimator="miller_madow"), mm, rtol=1e-6)
    jitted = jax.jit(partial(info.entropy, num_classes=2, estimator="miller_madow"))
    np.testing.assert_allclose(jitted(jnp.array(x)), mm, rtol=1e-6)
    # Empty bins do not count towards m.
    np.testing.assert_allclose(info.entropy(x, num_classes=7, estimator="miller_madow"), mm,
                               rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_joint_and_conditional_entropy_match_scipy(seed):
    x, y = _labels(seed, 80, 3), _labels(seed + 10, 80, 4)
    joint = np.zeros((3, 4))
    np.add.at(joint, (x, y), 1)
    h_xy = scipy.stats.entropy(joint.ravel(), base=2)
    np.testing.assert_allclose(info.joint_entropy(x, y), h_xy, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(partial(info.joint_entropy, num_classes=(3, 4)))(x, y), h_xy,
                               rtol=1e-5)
    close(info.conditional_entropy(x, y), h_xy - _h_bits(y, 4))
    f = jax.jit(partial(info.conditional_entropy, num_classes=(3, 4)))
    close(f(x, y), h_xy - _h_bits(y, 4))


def test_conditional_entropy_hand_cases():
    x = np.array([0, 1, 0, 1])
    np.testing.assert_allclose(info.conditional_entropy(x, x), 0.0, atol=1e-7)
    np.testing.assert_allclose(info.conditional_entropy(x, np.array([0, 0, 1, 1])), 1.0, rtol=1e-6)
    # y determines x but not conversely: H(X|Y) = 0, H(Y|X) = 1.
    y = np.array([0, 1, 2, 3])
    np.testing.assert_allclose(info.conditional_entropy(x, y), 0.0, atol=1e-6)
    np.testing.assert_allclose(info.conditional_entropy(y, x), 1.0, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mutual_information_matches_sklearn(seed):
    x = _labels(seed, 120, 4)
    y = np.where(_labels(seed + 5, 120, 3) == 0, x % 3, _labels(seed + 9, 120, 3))  # dependent
    ref = skm.mutual_info_score(x, y) / LN2  # sklearn is in nats
    np.testing.assert_allclose(info.mutual_information(x, y), ref, rtol=1e-5, atol=1e-6)
    f = jax.jit(partial(info.mutual_information, num_classes=(4, 3)))
    np.testing.assert_allclose(f(x, y), ref, rtol=1e-5, atol=1e-6)


def test_mutual_information_miller_madow_hand_formula():
    x = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    y = np.array([0, 1, 1, 1, 0, 0, 1, 0])
    n = len(x)
    m_x, m_y, m_xy = 3, 2, len(set(zip(x.tolist(), y.tolist())))
    ref = skm.mutual_info_score(x, y) / LN2 + (m_x - 1 + m_y - 1 - (m_xy - 1)) / (2 * n * LN2)
    close(info.mutual_information(x, y, estimator="miller_madow"), ref)
    # Equivalent definition: sum of Miller-Madow entropies.
    parts = [info.entropy(x, estimator="miller_madow"), info.entropy(y, estimator="miller_madow"),
             info.joint_entropy(x, y, estimator="miller_madow")]
    np.testing.assert_allclose(ref, parts[0] + parts[1] - parts[2], rtol=1e-5)


@pytest.mark.parametrize("variant", ["arithmetic", "geometric", "min", "max"])
@pytest.mark.parametrize("seed", [0, 1])
def test_nmi_matches_sklearn(variant, seed):
    x = _labels(seed, 90, 4)
    y = np.where(_labels(seed + 3, 90, 2) == 0, x, _labels(seed + 4, 90, 5))
    ref = skm.normalized_mutual_info_score(x, y, average_method=variant)
    close(info.normalized_mutual_information(x, y, variant=variant), ref)
    f = jax.jit(partial(info.normalized_mutual_information, variant=variant, num_classes=5))
    np.testing.assert_allclose(f(x, y), ref, rtol=1e-5)


def test_nmi_joint_variant_and_degenerate_conventions():
    x, y = _labels(3, 70, 3), _labels(4, 70, 3)
    ref = skm.mutual_info_score(x, y) / LN2 / info.joint_entropy(x, y)
    close(info.normalized_mutual_information(x, y, variant="joint"), ref)
    const, other = np.zeros(6, int), np.array([0, 1, 0, 1, 2, 2])
    nmi = partial(info.normalized_mutual_information, num_classes=3)
    for v in info.NMI_VARIANTS:
        assert float(nmi(const, const, variant=v)) == 1.0
        assert float(nmi(const, other, variant=v)) == 0.0
    for v in ("arithmetic", "geometric", "min", "max"):  # the same conventions as scikit-learn
        assert skm.normalized_mutual_info_score(const, const, average_method=v) == 1.0
        assert skm.normalized_mutual_info_score(const, other, average_method=v) == 0.0


def test_contingency_table_and_valid_mask():
    x, y = _labels(0, 40, 3), _labels(1, 40, 2)
    ok = _labels(2, 40, 3) > 0
    ref = skm.confusion_matrix(x[ok], y[ok], labels=[0, 1, 2])[:, :2]
    np.testing.assert_array_equal(info.contingency_table(x, y, num_classes=(3, 2), valid=ok), ref)
    table = jax.jit(partial(info.contingency_table, num_classes=(3, 2)))(x, y, valid=ok)
    np.testing.assert_array_equal(table, ref)
    # A mask is the same as dropping the samples, whatever the masked entries hold.
    junk = np.where(ok, x, 99)
    np.testing.assert_allclose(info.mutual_information(junk, y, valid=ok, num_classes=(3, 2)),
                               info.mutual_information(x[ok], y[ok]), rtol=1e-6)
    close(info.entropy(junk, valid=ok, num_classes=3), _h_bits(x[ok], 3))


def test_vmap_equals_loop():
    xs = jnp.asarray(np.stack([_labels(s, 50, 3) for s in range(4)]))
    ys = jnp.asarray(np.stack([_labels(s + 20, 50, 3) for s in range(4)]))
    f = partial(info.mutual_information, num_classes=3, estimator="miller_madow")
    batched = jax.vmap(f)(xs, ys)
    np.testing.assert_allclose(batched, [f(a, b) for a, b in zip(xs, ys)], rtol=1e-6)


def test_independence_miller_madow_removes_the_bias():
    # 200 independent pairs of 4-class labels, n = 200: plug-in MI is biased up by about
    # (C - 1)^2 / (2 n ln 2); Miller-Madow should average near zero.
    key = jax.random.key(0)
    kx, ky = jax.random.split(key)
    xs = jax.random.randint(kx, (200, 200), 0, 4)
    ys = jax.random.randint(ky, (200, 200), 0, 4)
    plug = jax.vmap(partial(info.mutual_information, num_classes=4))(xs, ys)
    mm = jax.vmap(partial(info.mutual_information, num_classes=4, estimator="miller_madow"))(xs, ys)
    bias = 9 / (2 * 200 * LN2)
    assert abs(float(plug.mean()) - bias) < 0.2 * bias
    assert abs(float(mm.mean())) < 0.1 * bias


# ----------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------


_PAD, _C = 40, 5


@st.composite
def _label_pairs(draw):
    """Up to 40 labels in up to 5 classes each, padded to 40 with a valid mask so that every
    example reuses one compiled kernel (entropies do not depend on empty classes)."""
    n = draw(st.integers(1, _PAD))
    cx, cy = draw(st.integers(1, _C)), draw(st.integers(1, _C))
    x = draw(st.lists(st.integers(0, cx - 1), min_size=n, max_size=n))
    y = draw(st.lists(st.integers(0, cy - 1), min_size=n, max_size=n))
    pad = [0] * (_PAD - n)
    return np.array(x + pad), np.array(y + pad), np.arange(_PAD) < n


@settings(max_examples=25, deadline=None)
@given(_label_pairs())
def test_mi_bounds_and_symmetry(pair):
    x, y, ok = pair
    kw = dict(num_classes=_C, valid=ok)
    mi = float(info.mutual_information(x, y, **kw))
    hx, hy = float(info.entropy(x, **kw)), float(info.entropy(y, **kw))
    assert mi >= 0.0
    assert mi <= min(hx, hy) + 1e-5
    np.testing.assert_allclose(mi, info.mutual_information(y, x, **kw), atol=1e-6)
    mm = info.mutual_information(x, y, estimator="miller_madow", **kw)
    np.testing.assert_allclose(mm, info.mutual_information(y, x, estimator="miller_madow", **kw),
                               atol=1e-6)
    for v in info.NMI_VARIANTS:
        nmi = float(info.normalized_mutual_information(x, y, variant=v, **kw))
        assert 0.0 <= nmi <= 1.0


@settings(max_examples=25, deadline=None)
@given(_label_pairs(), st.permutations(range(_C)), st.permutations(range(_C)))
def test_invariance_under_relabelling(pair, perm_x, perm_y):
    x, y, ok = pair
    px, py = np.array(perm_x), np.array(perm_y)
    kw = dict(num_classes=_C, valid=ok)
    for est in info.ESTIMATORS:
        np.testing.assert_allclose(info.mutual_information(px[x], py[y], estimator=est, **kw),
                                   info.mutual_information(x, y, estimator=est, **kw), atol=1e-5)
        np.testing.assert_allclose(info.entropy(px[x], estimator=est, **kw),
                                   info.entropy(x, estimator=est, **kw), atol=1e-5)
    np.testing.assert_allclose(info.normalized_mutual_information(px[x], py[y], **kw),
                               info.normalized_mutual_information(x, y, **kw), atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors():
    x = np.array([0, 1, 2])
    with pytest.raises(LabelArrayError, match="same length"):
        info.mutual_information(x, x[:2])
    with pytest.raises(LabelArrayError, match=r"y\[2\] = 2 is outside the label range \[0, 2\)"):
        info.mutual_information(x, x, num_classes=(3, 2))
    with pytest.raises(LabelArrayError, match="outside the label range"):
        info.entropy(np.array([0, -1]))
    with pytest.raises(LabelArrayError, match="no valid sample"):
        info.entropy(x, valid=np.zeros(3, bool))
    with pytest.raises(LabelArrayError, match="integer label array"):
        info.entropy(np.array([0.0, 1.0]))
    with pytest.raises(LabelArrayError, match="boolean mask"):
        info.entropy(x, valid=np.ones(2, bool))
    with pytest.raises(ValueError, match="unknown estimator"):
        info.mutual_information(x, x, estimator="jackknife")
    with pytest.raises(ValueError, match="unknown NMI variant"):
        info.normalized_mutual_information(x, x, variant="sqrt")
    with pytest.raises(LabelArrayError, match="num_classes must be given"):
        jax.jit(info.entropy)(jnp.asarray(x))


def test_jit_bad_input_gives_nan():
    f = jax.jit(partial(info.mutual_information, num_classes=2))
    assert np.isnan(f(jnp.array([0, 1, 5]), jnp.array([0, 1, 1])))
    h = jax.jit(partial(info.entropy, num_classes=2))
    assert np.isnan(h(jnp.array([0, 1]), valid=jnp.zeros(2, bool)))
    ok = jnp.array([True, True, False])
    assert np.isfinite(f(jnp.array([0, 1, 5]), jnp.array([0, 1, 1]), valid=ok))


# ----------------------------------------------------------------------------------------------
# Study tables
# ----------------------------------------------------------------------------------------------


def _study(seed=0, m=3, n=60, c=3):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, c, n)
    original = np.where(rng.random((m, n)) < 0.7, true, rng.integers(0, c, (m, n)))
    noise = rng.integers(0, c, (m, m, n))
    labels = np.where(rng.random((m, m, n)) < 0.6, original[:, None, :], noise)
    valid = rng.random((m, n)) < 0.8
    labels[np.broadcast_to(~valid[:, None, :], labels.shape)] = -1  # failed files hold junk
    return labels, original, true, valid


def test_pairwise_information_matches_direct_estimates():
    labels, original, true, valid = _study()
    df = info.pairwise_information(labels, original, true, valid, n_boot=0,
                                   nmi_variants=("arithmetic", "min"))
    assert len(df) == 9
    for row in df.itertuples():
        f, g = int(row.source[-1]), int(row.target[-1])
        ok = valid[f]
        x, y, t = original[f, ok], labels[f, g, ok], true[ok]
        assert row.n == ok.sum()
        close(row.mi_source, skm.mutual_info_score(x, y) / LN2)
        close(row.mi_mm_source, info.mutual_information(x, y, estimator="miller_madow"))
        close(row.nmi_min_source, skm.normalized_mutual_info_score(x, y, average_method="min"))
        close(row.mi_true, skm.mutual_info_score(t, y) / LN2)
        close(row.h_target, _h_bits(y, 3))
        close(row.h_true, _h_bits(t, 3))
        assert np.isnan(row.mi_source_lo) and np.isnan(row.mi_true_hi)


def test_pairwise_information_intervals_are_seeded_and_bracket():
    labels, original, true, valid = _study(1)
    kw = dict(n_boot=200, bootstrap_min_n=0)  # intervals at this small n too (mechanics only)
    a = info.pairwise_information(labels, original, true, valid, seed=3, **kw)
    b = info.pairwise_information(labels, original, true, valid, seed=3, **kw)
    c = info.pairwise_information(labels, original, true, valid, seed=4, **kw)
    assert a.equals(b) and not a.equals(c)
    assert (a.mi_source_lo <= a.mi_source_hi).all()
    assert ((a.mi_true_lo <= a.mi_true + 1e-6) & (a.mi_true - 1e-6 <= a.mi_true_hi)).mean() > 0.8
    want = {"source", "target", "n", "h_source", "h_target", "mi_source_lo",
            "nmi_arithmetic_true_hi"}
    assert want <= set(a)


def test_bootstrap_chunking_does_not_change_results(monkeypatch):
    labels, original, true, valid = _study(2)
    kw = dict(n_boot=50, seed=0, bootstrap_min_n=0)
    full = info.pairwise_information(labels, original, true, valid, **kw)
    monkeypatch.setattr(info, "_CHUNK_ELEMENTS", 1)
    chunked = info.pairwise_information(labels, original, true, valid, **kw)
    np.testing.assert_allclose(chunked.select_dtypes("number"), full.select_dtypes("number"))


def test_classification_metrics_match_sklearn():
    labels, original, true, valid = _study(3, m=4, c=4)
    df = info.classification_metrics(original, true, valid=valid, model_names=list("abcd"),
                                     n_boot=100)
    assert df.model.tolist() == list("abcd")
    for k, row in enumerate(df.itertuples()):
        p, t = original[k, valid[k]], true[valid[k]]
        assert row.n == valid[k].sum()
        close(row.accuracy, skm.accuracy_score(t, p))
        close(row.precision, skm.precision_score(t, p, average="macro", zero_division=0))
        close(row.recall, skm.recall_score(t, p, average="macro", zero_division=0))
        close(row.mi, skm.mutual_info_score(t, p) / LN2)
        assert row.accuracy_lo <= row.accuracy <= row.accuracy_hi
    one = info.classification_metrics(original[0], true, n_boot=0)
    np.testing.assert_allclose(one.accuracy, skm.accuracy_score(true, original[0]), rtol=1e-6)


def test_information_separates_what_accuracy_does_not():
    # Three balanced classes. Model A permutes two classes (systematic errors: its output still
    # determines the truth); model B is right a third of the time at random. Accuracy, macro
    # precision and macro recall are all 1/3 for both; mutual information is log2(3) vs 0.
    true = np.repeat([0, 1, 2], 90)
    a = np.array([1, 0, 2])[true]
    b = np.tile(np.repeat([0, 1, 2], 30), 3)
    df = info.classification_metrics(np.stack([a, b]), true, model_names=["A", "B"], n_boot=0)
    np.testing.assert_allclose(df[["accuracy", "precision", "recall"]], 1 / 3, rtol=1e-5)
    np.testing.assert_allclose(df.mi, [math.log2(3), 0.0], atol=1e-5)


def test_one_class_entropies_are_positive_zero():
    x = np.zeros(7, int)
    for est in ("plugin", "miller_madow"):
        for value in (info.entropy(x, estimator=est), info.conditional_entropy(x, x, estimator=est),
                      info.joint_entropy(x, x, estimator=est)):
            assert float(value) == 0.0 and not np.signbit(value), value
    df = info.classification_metrics(np.zeros((1, 5), int), np.zeros(5, int), n_boot=0)
    assert not np.signbit(df[["h_true", "h_pred", "mi", "mi_mm"]].to_numpy()).any()
    assert str(df.h_pred[0]) == "0.0"


def test_results_stay_float32_with_x64_enabled():
    x, y = _labels(0, 40, 3), _labels(1, 40, 3)
    with jax.enable_x64(True):
        outs = [info.entropy(x), info.entropy(x, estimator="miller_madow"), info.joint_entropy(x, y),
                info.conditional_entropy(x, y), info.mutual_information(x, y),
                info.mutual_information(x, y, estimator="miller_madow"),
                info.normalized_mutual_information(x, y, variant="joint"), info.contingency_table(x, y),
                info.entropy_from_counts(np.array([3.0, 1.0])), info.mutual_information_from_table(np.eye(2)),
                jax.jit(partial(info.mutual_information, num_classes=3))(jnp.asarray(x), jnp.asarray(y))]
        lab = np.stack([np.stack([x, y]), np.stack([y, x])])
        outs += list(transfer_matrix(lab, np.stack([x, y])))
    assert all(o.dtype == jnp.float32 for o in outs), [o.dtype for o in outs]


def test_bootstrap_intervals_only_where_they_hold():
    labels, original, true, valid = _study(4)
    df = info.pairwise_information(labels, original, true, valid, n_boot=100)
    assert (df.n < 500).all() and df.filter(regex="_(lo|hi)$").isna().all().all()
    assert df.interval_note.str.contains("< 500").all() and (df.interval == "basic_bootstrap").all()
    assert info.bootstrap_min_n(3) == 500 and info.bootstrap_min_n(8) == 1280
    some = info.pairwise_information(labels, original, true, valid, n_boot=100, bootstrap_min_n=45)
    big = some.n >= 45
    assert big.any() and (~big).any()
    assert some.mi_source_lo[big].notna().all() and some.mi_source_lo[~big].isna().all()
    assert (some.interval_note[big] == "").all()
    # metrics: accuracy gets the exact binomial interval at any n, the bootstrap ones wait
    m = info.classification_metrics(original, true, valid=valid, n_boot=100)
    for row, k in zip(m.itertuples(), range(3)):
        hits = int((original[k] == true)[valid[k]].sum())
        ci = scipy.stats.binomtest(hits, int(valid[k].sum())).proportion_ci(0.95, method="exact")
        np.testing.assert_allclose([row.accuracy_lo, row.accuracy_hi], [ci.low, ci.high], atol=1e-9)
    assert m.precision_lo.isna().all() and m.interval[0].startswith("accuracy: clopper_pearson")


def test_basic_bootstrap_by_hand():
    x, y = _labels(5, 50, 3), _labels(6, 50, 3)
    y[:30] = x[:30]
    s = info._stats_with_intervals(x[None], y[None], np.ones((1, 50), bool), 3, variants=("arithmetic",),
                                   classification=True, n_boot=80, confidence=0.9, seed=2, min_n=0)
    idx = info.bootstrap_indices(50, 80, 2)
    mi = np.array([skm.mutual_info_score(x[i], y[i]) / LN2 for i in idx])
    prec = np.array([skm.precision_score(x[i], y[i], average="macro", zero_division=0) for i in idx])
    est = skm.mutual_info_score(x, y) / LN2
    q_lo, q_hi = np.percentile(mi, [5, 95])
    close(s["mi_lo"][0], max(2 * est - q_hi, 0.0))
    close(s["mi_hi"][0], 2 * est - q_lo)
    close([s["precision_lo"][0], s["precision_hi"][0]], np.percentile(prec, [5, 95]))


def test_study_tables_reject_bad_input():
    labels, original, true, valid = _study()
    with pytest.raises(LabelArrayError, match="original has shape"):
        info.pairwise_information(labels, original[:2], true, valid)
    with pytest.raises(LabelArrayError, match="outside the label range"):
        info.classification_metrics(original, true, num_classes=2)
    with pytest.raises(LabelArrayError, match="every entry of valid is False"):
        info.classification_metrics(original, true, valid=np.zeros_like(valid))
    with pytest.raises(ValueError, match="unknown NMI variant"):
        info.pairwise_information(labels, original, nmi_variants=("avg",))
