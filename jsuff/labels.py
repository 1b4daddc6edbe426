"""Label views: a task's classes, and which outputs of each model stand for each class.

Models trained on different label sets can join one study when the study names its own classes
and says, per model, which of the model's outputs (tags) map to each class: a subset of the tags
becomes the classes, and several tags may map to one class (``techno``, ``electronic`` and
``electro`` all to ``electronic``). A model's label on a clip is then

    argmax over the task's classes k of  max over the tags t mapped to k of  logits[t]

(:func:`class_scores` is the inner max, :func:`class_labels` the argmax). Outputs mapped to no class
take no part: a music tagger whose top tag is ``guitar`` still answers with one of the classes.

The TOML shape a study config carries::

    [labels]
    classes = ["rock", "metal", "electronic", "ambient", "pop"]

    [labels.map.mtt_musicnn]          # a table per model (the study's model name) that needs one
    electronic = ["electronic", "techno", "dance"]
    ambient = ["ambient", "new age"]
    # rock, metal and pop are not listed: each maps to the model's own output of that name

Rules (every violation is a :class:`LabelViewError` that names the class, model and tags involved
and lists what exists):

* ``classes``: at least two distinct names; each a non-empty string of at most 200 characters,
  without control characters or surrounding whitespace.
* For each model and class: the tags listed in the model's table, or, when its table does not list
  the class (or it has no table), the model's output named exactly like the class. A class that
  gets no tag either way is an error, and so is an explicit empty list.
* Every listed tag must be one of the model's output names (matched exactly, case included; the
  error suggests close names). A tag listed twice in one class is an error, and so is a tag mapped
  to two classes of the same model: with max pooling both classes would score the same whenever
  that tag is the model's largest mapped logit, and the argmax would quietly give the earlier
  class. A model whose output names repeat one of the tags it maps is ambiguous and refused.
* A table for a model the study does not have is an error (it is almost always a misspelt name).
* Without a ``[labels]`` table, :func:`resolve_views` keeps the rule studies had before label views:
  every model must have the same set of output names, the classes are the first model's in its
  order, and each model's view is a permutation of its outputs (the identity for the first model).

A view is the identity for a model whose outputs are exactly the classes in the same order, one
tag each; :func:`view_model` then returns the model unchanged, so a study whose models share one
label set computes exactly what it did without views.

Class and tag names are user strings: this module never puts them in a path, and quotes them with
``repr`` in messages; whoever renders :meth:`LabelView.rows` into HTML must escape them.

Example:
    >>> import jax.numpy as jnp
    >>> view = LabelView.from_toml({"classes": ["rock", "electronic"],
    ...                             "map": {"m": {"electronic": ["techno", "electronic"]}}})
    >>> mv = view.resolve("m", ["rock", "techno", "piano", "electronic"])
    >>> mv.tags
    (('rock',), ('techno', 'electronic'))
    >>> class_labels(jnp.array([[0.1, 2.0, 9.0, -1.0]]), mv.index).tolist()  # piano is ignored
    [1]
"""

from __future__ import annotations

import dataclasses
import difflib
import unicodedata
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from jsuff.models.base import Model

__all__ = [
    "LabelView",
    "LabelViewError",
    "ModelView",
    "class_labels",
    "class_scores",
    "resolve_views",
    "view_model",
]

MAX_NAME = 200
_LIST_LIMIT = 60  # names listed in one error message


class LabelViewError(ValueError):
    """A label view that cannot be used; the message names the class, model and tags involved."""


def _show(s: object) -> str:
    """A user string for a message: ``repr`` (control characters escaped), long ones shortened."""
    r = repr(s)
    return r if len(r) <= 80 else r[:77] + "..."


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(_show(n) for n in names[:_LIST_LIMIT])
    more = len(names) - _LIST_LIMIT
    return shown + (f", ... ({more} more)" if more > 0 else "")


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str):
        raise LabelViewError(f"{what} must be a string, got {type(name).__name__} {_show(name)}")
    if not name or name != name.strip():
        raise LabelViewError(f"{what} {_show(name)} is empty or has leading/trailing whitespace")
    if len(name) > MAX_NAME:
        raise LabelViewError(f"{what} {_show(name)} is longer than {MAX_NAME} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
        raise LabelViewError(f"{what} {_show(name)} contains control characters")
    return name


def _string_list(value: object, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise LabelViewError(f"{what} must be a list of strings, got {_show(value)}")
    return tuple(value)  # the items are checked by the caller (classes) or against a model (tags)


# ----------------------------------------------------------------------------------------------
# The view as declared
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LabelView:
    """A task's classes and, per model, the tags listed for some of them (frozen and hashable).

    Attributes:
        classes: the task's class names, in the order labels are numbered.
        maps: ``((model, ((class, (tag, ...)), ...)), ...)``: the declared tables, sorted by model
            name, each class in the order of ``classes``. Classes a table does not list map to the
            model's output of the same name (see the module docstring).
    """

    classes: tuple[str, ...]
    maps: tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...] = ()

    def __post_init__(self) -> None:
        classes = tuple(_check_name(c, "class name") for c in _string_list(self.classes, "'classes'"))
        if len(classes) < 2:
            raise LabelViewError(f"a label view needs at least two classes, got {_listing(classes)}")
        dupes = sorted({c for c in classes if classes.count(c) > 1})
        if dupes:
            raise LabelViewError(f"class names must be distinct; repeated: {_listing(dupes)}")
        object.__setattr__(self, "classes", classes)
        maps = []
        for model, table in self.maps:
            _check_name(model, "model name in [labels.map]")
            where = f"the [labels.map] table of {_show(model)}"
            entries = dict(table)
            unknown = [c for c in entries if c not in classes]
            if unknown:
                raise LabelViewError(
                    f"{where} maps {_listing(unknown)}, which are not among the classes "
                    f"{_listing(classes)}"
                )
            rows = []
            for c in classes:
                if c not in entries:
                    continue
                tags = _string_list(entries[c], f"class {_show(c)} in {where}")
                if not tags:
                    raise LabelViewError(
                        f"class {_show(c)} has no tags for model {_show(model)}: list at least one of "
                        "its outputs, or leave the class out of the table to use the output of the same name"
                    )
                for t in tags:
                    _check_name(t, f"tag of class {_show(c)} for model {_show(model)}")
                rows.append((c, tags))
            maps.append((model, tuple(rows)))
        names = [m for m, _ in maps]
        dupes = sorted({m for m in names if names.count(m) > 1})
        if dupes:
            raise LabelViewError(f"[labels.map] has more than one table for {_listing(dupes)}")
        object.__setattr__(self, "maps", tuple(sorted(maps)))

    @classmethod
    def from_toml(cls, raw: Mapping[str, Any]) -> LabelView:
        """The view from a study config's ``[labels]`` table (``classes`` and optional ``map``)."""
        if not isinstance(raw, Mapping):
            raise LabelViewError(f"[labels] must be a table, got {_show(raw)}")
        unknown = sorted(set(raw) - {"classes", "map"})
        if unknown:
            raise LabelViewError(f"[labels]: unknown key(s) {_listing(unknown)}; allowed: 'classes', 'map'")
        if "classes" not in raw:
            raise LabelViewError("[labels] needs 'classes', the list of the task's class names")
        tables = raw.get("map", {})
        if not isinstance(tables, Mapping):
            raise LabelViewError(f"[labels.map] must be a table of per-model tables, got {_show(tables)}")
        maps = []
        for model, table in tables.items():
            if not isinstance(table, Mapping):
                raise LabelViewError(
                    f"the [labels.map] entry {_show(model)} must be a table of class = [tags], got {_show(table)}"
                )
            maps.append((model, tuple(table.items())))
        return cls(classes=_string_list(raw["classes"], "'classes'"), maps=tuple(maps))

    def to_toml(self) -> dict[str, Any]:
        """The inverse of :meth:`from_toml` (plain lists and dicts; JSON-serialisable too)."""
        out: dict[str, Any] = {"classes": list(self.classes)}
        if self.maps:
            out["map"] = {m: {c: list(t) for c, t in rows} for m, rows in self.maps}
        return out

    def check_models(self, names: Sequence[str]) -> None:
        """Refuse ``[labels.map]`` tables for models not in ``names`` (almost always a misspelt name)."""
        stray = [m for m, _ in self.maps if m not in names]
        if stray:
            raise LabelViewError(
                f"[labels.map] has tables for {_listing(stray)}, which are not models of this study; "
                f"its models: {_listing(list(names))}"
            )

    def table(self, model: str) -> dict[str, tuple[str, ...]]:
        """The classes ``model``'s table lists, with their tags (empty when it has none)."""
        return dict(dict(self.maps).get(model, ()))

    def resolve(self, model: str, labels: Sequence[str]) -> ModelView:
        """Check the view against ``model``'s output names and return its :class:`ModelView`.

        Raises:
            LabelViewError: a class without tags for this model, an unknown or ambiguous tag, or
                a tag mapped twice (see the module docstring).
        """
        labels = tuple(str(lbl) for lbl in labels)
        listed = self.table(model)
        where: dict[str, str] = {}
        tags_per_class = []
        for c in self.classes:
            if c in listed:
                tags = listed[c]
            elif c in labels:
                tags = (c,)
            else:
                raise LabelViewError(
                    f"class {_show(c)} has no tags for model {_show(model)}: it has no output of that "
                    f"name, so list the outputs that stand for it in its [labels.map] table; its outputs: "
                    f"{_listing(labels)}"
                )
            for t in tags:
                if t not in labels:
                    near = difflib.get_close_matches(t, labels, n=3)
                    hint = f"; did you mean {_listing(near)}?" if near else ""
                    raise LabelViewError(
                        f"tag {_show(t)} (class {_show(c)}) is not an output of model {_show(model)}"
                        f"{hint} its outputs: {_listing(labels)}"
                    )
                if labels.count(t) > 1:
                    raise LabelViewError(
                        f"model {_show(model)} has {labels.count(t)} outputs named {_show(t)}, so the "
                        f"tag of class {_show(c)} is ambiguous"
                    )
                if t in where:
                    same = where[t] == c
                    raise LabelViewError(
                        f"tag {_show(t)} of model {_show(model)} is listed twice in class {_show(c)}"
                        if same
                        else f"tag {_show(t)} of model {_show(model)} is mapped to two classes, "
                        f"{_show(where[t])} and {_show(c)}: each output may stand for one class only"
                    )
                where[t] = c
            tags_per_class.append(tuple(tags))
        return ModelView.build(model, self.classes, labels, tuple(tags_per_class))

    def rows(self, models: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
        """``{"model", "class", "tags"}`` per model and class, for a report (escape before HTML)."""
        out = []
        for name, labels in models.items():
            mv = self.resolve(name, labels)
            for c, tags in zip(mv.classes, mv.tags, strict=True):
                out.append({"model": name, "class": c, "tags": ", ".join(tags)})
        return out


# ----------------------------------------------------------------------------------------------
# One model's resolved view
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class ModelView:
    """A :class:`LabelView` resolved against one model's outputs.

    Attributes:
        model: the study's name for the model.
        classes: the task's classes.
        tags: per class, the output names that stand for it.
        index: ``[K, T]`` int32 output indices per class; a class with fewer than ``T`` tags
            repeats its first index, which leaves the max unchanged.
        identity: the outputs are exactly the classes in the same order (``index`` is
            ``arange(K)[:, None]``), so the class scores are the logits themselves.
    """

    model: str
    classes: tuple[str, ...]
    tags: tuple[tuple[str, ...], ...]
    index: np.ndarray
    identity: bool

    @classmethod
    def build(
        cls, model: str, classes: tuple[str, ...], labels: tuple[str, ...], tags: tuple[tuple[str, ...], ...]
    ) -> ModelView:
        width = max(len(t) for t in tags)
        rows = [[labels.index(t) for t in ts] for ts in tags]
        index = np.asarray([r + [r[0]] * (width - len(r)) for r in rows], np.int32)
        identity = labels == classes and width == 1 and bool(np.all(index[:, 0] == np.arange(len(classes))))
        index.setflags(write=False)
        return cls(model, classes, tags, index, identity)

    def scores(self, logits: jax.Array) -> jax.Array:
        """``[..., C]`` logits -> ``[..., K]`` class scores (see :func:`class_scores`)."""
        return logits if self.identity else class_scores(logits, jnp.asarray(self.index))

    def labels(self, logits: jax.Array) -> jax.Array:
        """``[..., C]`` logits -> ``[...]`` int32 task labels (see :func:`class_labels`)."""
        return class_labels(logits, jnp.asarray(self.index))


def class_scores(logits: jax.Array, index: jax.Array) -> jax.Array:
    """Each class's score: the max of the logits of its tags. ``[..., C], [K, T] -> [..., K]``.

    Pure, jittable and vmappable (``index`` may be traced). Rows of ``index`` with fewer tags repeat
    one of them (:class:`ModelView` pads with the first), which leaves their max unchanged.

    Example:
        >>> class_scores(jnp.array([1.0, 5.0, 3.0]), jnp.array([[0, 2], [1, 1]])).tolist()
        [3.0, 5.0]
    """
    return jnp.max(jnp.take(logits, index, axis=-1), axis=-1)


def class_labels(logits: jax.Array, index: jax.Array) -> jax.Array:
    """The task label: argmax over classes of :func:`class_scores` (ties: the first class), int32."""
    return jnp.argmax(class_scores(logits, index), axis=-1).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------
# A study's models
# ----------------------------------------------------------------------------------------------


def resolve_views(view: LabelView | None, models: Mapping[str, Sequence[str]]) -> dict[str, ModelView]:
    """Every model's :class:`ModelView`, from the study's view or (``None``) the shared-label rule.

    Args:
        view: the study's ``[labels]``, or ``None`` for studies without one.
        models: the study's model names (in study order) and each model's output names.

    Raises:
        LabelViewError: a table for a model the study does not have, a model the view does not fit,
            or (``view=None``) models whose output names differ.
    """
    names = list(models)
    if not names:
        raise LabelViewError("a study needs at least one model")
    if view is None:
        first = tuple(models[names[0]])
        for name in names:
            labels = tuple(models[name])
            if sorted(labels) != sorted(first) or len(set(labels)) != len(labels):
                raise LabelViewError(
                    f"model {_show(name)} has labels {_listing(labels)}, but the study's first model has "
                    f"{_listing(first)}: all models of a study must share one set of label names, or the "
                    "study must declare its classes and each model's tags in [labels]"
                )
        # the models' own names are the classes: any names a model may have (one output, names with
        # spaces ...), not only those a declared view accepts
        return {name: ModelView.build(name, first, tuple(models[name]), tuple((c,) for c in first)) for name in names}
    view.check_models(names)
    return {name: view.resolve(name, models[name]) for name in names}


def view_model(model: Model, mv: ModelView) -> Model:
    """``model`` seen through ``mv``: its apply returns class scores ``[B, K]`` and its labels are
    the task's classes, so search, extraction and transfer work on the task labels unchanged.
    Returns ``model`` itself when the view is the identity."""
    if mv.identity:
        return model
    apply, index = model.apply, jnp.asarray(mv.index)

    def viewed(params: Any, waveforms: jax.Array) -> jax.Array:
        return class_scores(apply(params, waveforms), index)

    return dataclasses.replace(model, apply=viewed, labels=mv.classes)
