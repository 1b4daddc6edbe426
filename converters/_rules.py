"""Key-map row builders every converter shares, and the convert path of the config-file families.

The row builders (:func:`linear`, :func:`conv`, :func:`batch_norm`, :func:`layer_norm`) return the
rows of one PyTorch layer for :func:`converters.common.map_state_dict`, so a family's table reads
as a list of layers (``{i}`` placeholders pass through untouched); :func:`convert_state_dict` is
the read-map-check-save path the anti-spoofing and CNN converters share.

Example:
    >>> linear("fc", "head")
    [('fc.weight', 'head/kernel', 'linear'), ('fc.bias', 'head/bias', 'identity')]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from converters.common import ConversionError, Rule, finish, map_state_dict, read_json, read_state_dict
from jsuff.models.base import InputPolicy, Model, expected_shapes


def batch_norm(torch_prefix: str, flax_prefix: str) -> list[Rule]:
    """BatchNorm{1,2}d: affine and running statistics (``num_batches_tracked`` is dropped on read)."""
    return [
        (f"{torch_prefix}.weight", f"{flax_prefix}/scale", "identity"),
        (f"{torch_prefix}.bias", f"{flax_prefix}/bias", "identity"),
        (f"{torch_prefix}.running_mean", f"{flax_prefix}/mean", "identity"),
        (f"{torch_prefix}.running_var", f"{flax_prefix}/var", "identity"),
    ]


def linear(torch_prefix: str, flax_prefix: str) -> list[Rule]:
    """nn.Linear: weight (out, in) -> kernel (in, out)."""
    return [
        (f"{torch_prefix}.weight", f"{flax_prefix}/kernel", "linear"),
        (f"{torch_prefix}.bias", f"{flax_prefix}/bias", "identity"),
    ]


def layer_norm(torch_prefix: str, flax_prefix: str) -> list[Rule]:
    """nn.LayerNorm (or a norm with only an affine ``weight`` and ``bias``): -> ``scale``, ``bias``."""
    return [
        (f"{torch_prefix}.weight", f"{flax_prefix}/scale", "identity"),
        (f"{torch_prefix}.bias", f"{flax_prefix}/bias", "identity"),
    ]


def conv(torch_prefix: str, flax_prefix: str, transform: str) -> list[Rule]:
    """nn.Conv1d / nn.Conv2d with bias; ``transform`` is ``"conv1d"`` or ``"conv2d"``."""
    return [
        (f"{torch_prefix}.weight", f"{flax_prefix}/kernel", transform),
        (f"{torch_prefix}.bias", f"{flax_prefix}/bias", "identity"),
    ]


def read_model_config(path: Path | None, *, arch: str, example: str) -> dict[str, Any]:
    """The bare model config from ``path``: either the object itself or the ``"model_config"``
    of a training config that wraps it (as clovaai/aasist's ``config/*.conf`` files do).

    Raises:
        ConversionError: no path, an unreadable file, or JSON that is not an object.
    """
    if path is None:
        raise ConversionError(f"{arch} needs its model config: pass --config {example}")
    obj = read_json(path, f"{arch} config")
    if isinstance(obj, dict) and isinstance(obj.get("model_config"), dict):
        obj = obj["model_config"]
    if not isinstance(obj, dict):
        raise ConversionError(f"{arch} config {path} must hold a JSON object, got {type(obj).__name__}")
    return dict(obj)


def convert_state_dict(
    src: Path,
    config_path: Path,
    *,
    arch: str,
    config: Mapping[str, Any],
    rules: Sequence[Rule],
    ignore: Sequence[str] = (),
    labels: Sequence[str],
    sample_rate: int,
    input: InputPolicy,
    dest: str | Path | None,
    overwrite: bool,
) -> Model:
    """Read ``src``, map it with ``rules`` against ``arch``'s expected shapes, build and save.

    Every missing, unexpected and mis-shaped key is named in one :class:`ConversionError`; the
    source files' checksums go into ``model.json``.
    """
    sd = read_state_dict(src)
    params = map_state_dict(sd, rules, expected_shapes(arch, config), source=str(src), ignore=ignore)
    return finish(
        arch=arch,
        config=config,
        params=params,
        labels=labels,
        sample_rate=sample_rate,
        input=input,
        source_files=[src, config_path],
        dest=dest,
        overwrite=overwrite,
    )


def config_converter(
    *,
    arch: str,
    rules: Sequence[Rule],
    ignore: Sequence[str],
    labels: Sequence[str],
    parse: Callable[[Mapping[str, Any]], Any],
    example: str,
) -> Callable[..., Model]:
    """A family's ``convert(src, *, dest, config, overwrite)`` for a checkpoint plus model config.

    ``parse`` turns the config mapping into the family's config dataclass, which supplies
    ``sample_rate``, ``input_policy()`` and ``to_json()`` (the config stored in ``model.json``,
    defaults written out); the labels are fixed by the family.
    """

    def convert(src: Path, *, dest: str | Path | None, config: Path | None, overwrite: bool = False) -> Model:
        cfg = read_model_config(config, arch=arch, example=example)
        parsed = parse(cfg)
        return convert_state_dict(
            src,
            config,  # type: ignore[arg-type]  (read_model_config rejected None)
            arch=arch,
            config=parsed.to_json(),
            rules=rules,
            ignore=ignore,
            labels=labels,
            sample_rate=parsed.sample_rate,
            input=parsed.input_policy(),
            dest=dest,
            overwrite=overwrite,
        )

    convert.__doc__ = (
        f"Convert a {arch} checkpoint with its model config (bare or wrapped in ``model_config``).\n\n"
        "Raises:\n"
        "    ConversionError: no or unreadable config, unreadable checkpoint, or keys that do not\n"
        "        match the config (every missing, unexpected and mis-shaped key named at once).\n"
        "    ModelError: a config the architecture rejects.\n"
    )
    return convert
