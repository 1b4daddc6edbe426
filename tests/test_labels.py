"""Label views (jsuff.labels): validation, the TOML shape, and class scores against NumPy."""

from __future__ import annotations

import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jsuff.labels import (
    LabelView,
    LabelViewError,
    class_labels,
    class_scores,
    resolve_views,
    view_model,
)
from jsuff.models.base import Model

MTT = ("guitar", "classical", "techno", "electronic", "rock", "ambient", "dance", "new age", "metal", "pop")
MSD = ("rock", "pop", "electronic", "dance", "metal", "ambient", "electro", "House", "hard rock", "chill")

GENRE_TOML = """
[labels]
classes = ["rock", "metal", "electronic", "ambient", "pop"]

[labels.map.mtt]
electronic = ["electronic", "techno", "dance"]
ambient = ["ambient", "new age"]

[labels.map.msd]
rock = ["rock", "hard rock"]
electronic = ["electronic", "electro", "House", "dance"]
ambient = ["ambient", "chill"]
"""


def genre_view() -> LabelView:
    return LabelView.from_toml(tomllib.loads(GENRE_TOML)["labels"])


def reference_scores(logits: np.ndarray, labels, tags) -> np.ndarray:
    """Independent NumPy reference: per class, the max of the logits of its tags, by name."""
    cols = [[list(labels).index(t) for t in ts] for ts in tags]
    return np.stack([logits[..., c].max(-1) for c in cols], axis=-1)


# ----------------------------------------------------------------------------------------------
# The TOML shape and its resolution
# ----------------------------------------------------------------------------------------------


def test_toml_view_resolves_listed_and_same_name_tags():
    views = resolve_views(genre_view(), {"mtt": MTT, "msd": MSD})
    mtt, msd = views["mtt"], views["msd"]
    assert mtt.classes == ("rock", "metal", "electronic", "ambient", "pop")
    assert mtt.tags == (("rock",), ("metal",), ("electronic", "techno", "dance"), ("ambient", "new age"), ("pop",))
    assert msd.tags[0] == ("rock", "hard rock") and msd.tags[1] == ("metal",)
    assert not mtt.identity and not msd.identity
    # padded rows repeat their first index
    assert mtt.index.shape == (5, 3)
    assert mtt.index[0].tolist() == [MTT.index("rock")] * 3


def test_round_trip_and_hashable():
    v = genre_view()
    again = LabelView.from_toml(v.to_toml())
    assert again == v and hash(again) == hash(v)
    # the order of the tables in the TOML does not matter
    raw = v.to_toml()
    raw["map"] = dict(reversed(list(raw["map"].items())))
    assert LabelView.from_toml(raw) == v


def test_class_scores_match_numpy_on_the_genre_view():
    rng = np.random.default_rng(0)
    for name, labels in (("mtt", MTT), ("msd", MSD)):
        mv = genre_view().resolve(name, labels)
        x = rng.normal(size=(7, len(labels))).astype(np.float32)
        ref = reference_scores(x, labels, mv.tags)
        np.testing.assert_array_equal(np.asarray(mv.scores(jnp.asarray(x))), ref)
        np.testing.assert_array_equal(np.asarray(mv.labels(jnp.asarray(x))), ref.argmax(-1))


def test_a_top_unmapped_tag_is_ignored():
    mv = genre_view().resolve("mtt", MTT)
    x = np.full(len(MTT), -5.0, np.float32)
    x[MTT.index("guitar")] = 10.0  # mapped to no class
    x[MTT.index("techno")] = 1.0
    assert int(mv.labels(jnp.asarray(x))) == mv.classes.index("electronic")


def test_shared_labels_give_the_identity_and_a_permutation():
    a = ("no", "yes")
    views = resolve_views(None, {"f": a, "g": ("yes", "no")})
    assert views["f"].identity and views["f"].index[:, 0].tolist() == [0, 1]
    assert not views["g"].identity and views["g"].index[:, 0].tolist() == [1, 0]
    x = jnp.asarray([[0.3, -2.0]])
    # identity: the scores are the logits themselves (the same object, bit for bit)
    assert views["f"].scores(x) is x
    np.testing.assert_array_equal(np.asarray(views["g"].scores(x)), np.asarray(x)[:, ::-1])
    # a declared view whose classes are a model's labels, same order, is the identity too
    assert LabelView(classes=a).resolve("f", a).identity


def test_shared_labels_refuse_different_label_sets():
    with pytest.raises(LabelViewError, match="share one set of label names.*\\[labels\\]"):
        resolve_views(None, {"f": ("a", "b"), "g": ("a", "c")})
    with pytest.raises(LabelViewError, match="share one set"):
        resolve_views(None, {"f": ("a", "b"), "g": ("a", "a", "b")})


def test_view_model_wraps_apply_and_labels():
    labels = ("x", "techno", "rock", "electronic")
    w = jnp.asarray(np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32))
    model = Model.from_function(lambda p, x: x @ p, w, sample_rate=16000, labels=labels)
    view = LabelView.from_toml(
        {"classes": ["rock", "electronic"], "map": {"m": {"electronic": ["techno", "electronic"]}}}
    )
    mv = view.resolve("m", labels)
    viewed = view_model(model, mv)
    assert viewed.labels == ("rock", "electronic") and viewed.sample_rate == 16000
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32))
    logits = np.asarray(x @ w)
    ref = reference_scores(logits, labels, mv.tags)
    np.testing.assert_allclose(np.asarray(jax.jit(viewed.apply)(viewed.params, x)), ref, rtol=1e-6)
    # identity views return the model itself
    same = LabelView(classes=labels).resolve("m", labels)
    assert view_model(model, same) is model


# ----------------------------------------------------------------------------------------------
# Validation: clear errors, hostile strings quoted
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"classes": ["rock"]}, "at least two classes"),
        ({"classes": ["rock", "pop", "rock"]}, "distinct; repeated: 'rock'"),
        ({"classes": "rock,pop"}, "list of strings"),
        ({"classes": ["rock", 3]}, "must be a string"),
        ({"classes": ["rock", ""]}, "empty"),
        ({"classes": ["rock", " pop"]}, "whitespace"),
        ({"classes": ["rock", "pop\x1b[31m"]}, "control characters"),
        ({"classes": ["rock", "p" * 201]}, "longer than 200"),
        ({"classes": ["a", "b"], "mapping": {}}, "unknown key.*'mapping'"),
        ({"map": {}}, "needs 'classes'"),
        ({"classes": ["a", "b"], "map": {"m": {"c": ["x"]}}}, "maps 'c', which are not among the classes 'a', 'b'"),
        ({"classes": ["a", "b"], "map": {"m": {"a": []}}}, "class 'a' has no tags for model 'm'"),
        ({"classes": ["a", "b"], "map": {"m": {"a": "x"}}}, "list of strings"),
        ({"classes": ["a", "b"], "map": {"m": ["x"]}}, "must be a table"),
        ({"classes": ["a", "b"], "map": ["m"]}, "must be a table"),
    ],
)
def test_declaration_errors(raw, match):
    with pytest.raises(LabelViewError, match=match):
        LabelView.from_toml(raw)


def test_resolution_errors_list_what_exists():
    view = LabelView.from_toml({"classes": ["rock", "house"], "map": {"msd": {"house": ["house"]}}})
    msg = "'house' .* not an output of model 'msd'; did you mean 'House'.*its outputs: 'rock'"
    with pytest.raises(LabelViewError, match=msg):
        view.resolve("msd", MSD)
    view = LabelView.from_toml({"classes": ["rock", "jazz"]})
    msg = "class 'jazz' has no tags for model 'mtt'.*its outputs: 'guitar', 'classical'"
    with pytest.raises(LabelViewError, match=msg):
        view.resolve("mtt", MTT)
    view = LabelView.from_toml({"classes": ["rock", "loud"], "map": {"m": {"loud": ["rock", "metal"]}}})
    with pytest.raises(LabelViewError, match="'rock' of model 'm' is mapped to two classes, 'rock' and 'loud'"):
        view.resolve("m", MTT)
    view = LabelView.from_toml({"classes": ["rock", "e"], "map": {"m": {"e": ["techno", "techno"]}}})
    with pytest.raises(LabelViewError, match="listed twice in class 'e'"):
        view.resolve("m", MTT)
    view = LabelView.from_toml({"classes": ["a", "b"]})
    with pytest.raises(LabelViewError, match="2 outputs named 'a'"):
        view.resolve("m", ("a", "a", "b"))
    with pytest.raises(LabelViewError, match="tables for 'mtx', which are not models of this study; its models: 'mtt'"):
        resolve_views(LabelView.from_toml({"classes": ["rock", "pop"], "map": {"mtx": {}}}), {"mtt": MTT})


def test_long_label_lists_are_shortened_in_messages():
    labels = tuple(f"tag{i}" for i in range(500))
    with pytest.raises(LabelViewError, match=r"\(440 more\)") as e:
        LabelView(classes=("a", "b")).resolve("big", labels)
    assert len(str(e.value)) < 2000


def test_hostile_names_are_quoted_in_messages():
    evil = "<script>alert(1)</script>"
    with pytest.raises(LabelViewError) as e:
        LabelView.from_toml({"classes": ["rock", "pop"], "map": {evil: {"rock": ["nope"]}}}).resolve(evil, MTT)
    assert repr(evil) in str(e.value)
    # rows hand the strings over as data; rendering them is the report's job (it escapes)
    v = LabelView.from_toml({"classes": [evil, "pop"], "map": {"m": {evil: ["rock"]}}})
    assert v.rows({"m": MTT})[0] == {"model": "m", "class": evil, "tags": "rock"}


# ----------------------------------------------------------------------------------------------
# class_scores / class_labels: jit, vmap, and random views against NumPy (hypothesis)
# ----------------------------------------------------------------------------------------------


@st.composite
def views_and_logits(draw):
    """A random model (C outputs), a random view (K classes of disjoint, non-empty tag sets,
    some outputs unmapped) and random logits [B, C] without ties."""
    c = draw(st.integers(2, 12))
    k = draw(st.integers(2, c))
    order = draw(st.permutations(range(c)))
    cuts = sorted(draw(st.lists(st.integers(1, c - 1), min_size=k - 1, max_size=k - 1, unique=True)))
    used = draw(st.integers(max(k, cuts[-1] + 1 if cuts else k), c))
    bounds = [0, *cuts, used]
    groups = [order[bounds[i] : bounds[i + 1]] for i in range(k)]
    b = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    logits = np.random.default_rng(seed).permutation(b * c).reshape(b, c).astype(np.float32)  # distinct
    return c, groups, logits


@settings(max_examples=40, deadline=None)
@given(views_and_logits())
def test_random_views_match_numpy(case):
    c, groups, logits = case
    labels = tuple(f"t{i}" for i in range(c))
    classes = tuple(f"k{i}" for i in range(len(groups)))
    table = {k: [labels[i] for i in g] for k, g in zip(classes, groups, strict=True)}
    view = LabelView.from_toml({"classes": list(classes), "map": {"m": table}})
    mv = view.resolve("m", labels)
    ref = reference_scores(logits, labels, mv.tags)
    got = np.asarray(class_scores(jnp.asarray(logits), jnp.asarray(mv.index)))  # jit: see below
    np.testing.assert_array_equal(got, ref)
    # second reference: the class of the largest mapped logit
    mapped = np.full(c, -1)
    for ki, g in enumerate(groups):
        mapped[list(g)] = ki
    masked = np.where(mapped[None] >= 0, logits, -np.inf)
    np.testing.assert_array_equal(np.asarray(mv.labels(jnp.asarray(logits))), mapped[masked.argmax(-1)])


def test_jit_equals_eager_and_vmap_equals_loop():
    mv = genre_view().resolve("msd", MSD)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 6, len(MSD))).astype(np.float32))
    idx = jnp.asarray(mv.index)
    eager = class_scores(x, idx)
    assert eager.shape == (4, 6, 5)
    np.testing.assert_array_equal(np.asarray(jax.jit(class_scores)(x, idx)), np.asarray(eager))
    vm = jax.vmap(class_labels, in_axes=(0, None))(x, idx)
    loop = jnp.stack([class_labels(xi, idx) for xi in x])
    np.testing.assert_array_equal(np.asarray(vm), np.asarray(loop))
    assert vm.dtype == jnp.int32
    # the index may be traced too (vmapped over views of the same shape)
    idx2 = jnp.stack([idx, idx[::-1]])
    per_view = jax.vmap(class_scores, in_axes=(None, 0))(x[0], idx2)
    np.testing.assert_array_equal(np.asarray(per_view[1]), np.asarray(class_scores(x[0], idx[::-1])))
