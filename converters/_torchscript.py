"""Read the parameters and buffers of a TorchScript archive as data, without running any of it.

``torch.jit.load`` runs the archive's code: a scripted module's ``__setstate__`` executes while
the file loads (it can create and write files with ``torch.from_file``), before a converter could
look at the tensors. A user-supplied file is never executed here. A TorchScript archive is a zip
holding ``data.pkl`` (the module tree: objects of ``__torch__.*`` classes whose state is a dict of
attributes, tensors referring to raw storages in ``data/``) and ``code/`` (the classes' source).

:func:`read_torchscript` unpickles ``data.pkl`` with an unpickler whose only callables are this
module's own constructors (``find_class`` refuses everything else, the standard way to restrict
pickle), so no function of the file's choosing can run. ``__torch__`` classes become inert
:class:`_ScriptObject` records; a class with its own ``__setstate__`` (whose state is not an
attribute dict) is refused, since only running its code could say what its state means. Which
attributes are parameters and buffers is read from the ``__parameters__`` / ``__buffers__`` lines of
the class source, as text. The result equals ``torch.jit.load(path).state_dict()`` (tested on
silero-vad's shipped model) and needs no torch.

Example:
    >>> import io, zipfile
    >>> buf = io.BytesIO()
    >>> with zipfile.ZipFile(buf, "w") as z:
    ...     z.writestr("m/data.pkl", b"")
    >>> is_torchscript(buf)
    False
"""

from __future__ import annotations

import ast
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

import ml_dtypes
import numpy as np

from converters.common import ConversionError

# torch storage class -> NumPy dtype of its elements.
_STORAGES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _Storage:
    """A storage class named in the pickle: only its element type is used."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = np.dtype(_STORAGES[name])


class _ScriptObject:
    """An inert stand-in for an object of a ``__torch__`` class: its qualified name and state."""

    qualname = ""

    def __new__(cls, *args: Any) -> _ScriptObject:  # NEWOBJ passes the class's __new__ args
        if args:
            raise pickle.UnpicklingError(f"{cls.qualname} is created with arguments, not a plain module")
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _script_class(qualname: str) -> type[_ScriptObject]:
    return type("ScriptObject", (_ScriptObject,), {"qualname": qualname})


def _plain_list(values: Any) -> list:
    return list(values)


def _type_tag(value: Any, _tag: Any) -> Any:
    return value


class _Unpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of a TorchScript archive; nothing but this module's own code runs."""

    def __init__(self, file: IO[bytes], archive: zipfile.ZipFile, prefix: str, source: str) -> None:
        super().__init__(file)
        self.archive = archive
        self.prefix = prefix
        self.source = source
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return _script_class(f"{module}.{name}")
        allowed = {
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("collections", "OrderedDict"): OrderedDict,
            ("torch.jit._pickle", "build_intlist"): _plain_list,
            ("torch.jit._pickle", "build_doublelist"): _plain_list,
            ("torch.jit._pickle", "build_boollist"): _plain_list,
            ("torch.jit._pickle", "build_tensorlist"): _plain_list,
            ("torch.jit._pickle", "restore_type_tag"): _type_tag,
        }
        if module == "torch" and name in _STORAGES:
            return _Storage(name)
        if (module, name) in allowed:
            return allowed[module, name]
        raise pickle.UnpicklingError(f"refusing {module}.{name}: not a tensor, list or module record")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Storage)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage, key, _location, numel = pid
        if key not in self.storages:
            name = f"{self.prefix}data/{key}"
            try:
                info = self.archive.getinfo(name)
            except KeyError:
                raise pickle.UnpicklingError(f"storage {name} is missing") from None
            nbytes = int(numel) * storage.dtype.itemsize
            if info.file_size != nbytes:
                raise pickle.UnpicklingError(f"storage {name} holds {info.file_size} bytes, expected {nbytes}")
            self.storages[key] = np.frombuffer(self.archive.read(info), dtype=storage.dtype)
        return self.storages[key]

    @staticmethod
    def _rebuild_tensor(
        storage: np.ndarray, offset: int, size: tuple, stride: tuple, _grad: Any, _hooks: Any, *_meta: Any
    ) -> np.ndarray:
        if not isinstance(storage, np.ndarray):
            raise pickle.UnpicklingError(f"a tensor built from a {type(storage).__name__}, not a storage")
        size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset)
        if len(size) != len(stride) or min((*size, *stride, offset), default=0) < 0:
            raise pickle.UnpicklingError(f"bad tensor layout: size {size}, stride {stride}, offset {offset}")
        if 0 in size:
            return np.zeros(size, storage.dtype)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.size:  # as_strided would read past the storage
            raise pickle.UnpicklingError(f"tensor of size {size} runs past its storage of {storage.size} elements")
        view = np.lib.stride_tricks.as_strided(
            storage[offset:], size, tuple(s * storage.itemsize for s in stride), writeable=False
        )
        return np.array(view)

    @staticmethod
    def _rebuild_parameter(data: Any, _grad: Any, _hooks: Any) -> Any:
        return data


def _archive_prefix(archive: zipfile.ZipFile) -> str | None:
    names = set(archive.namelist())
    for name in names:
        parts = name.split("/")
        if len(parts) == 2 and parts[1] == "data.pkl" and f"{parts[0]}/constants.pkl" in names:
            return parts[0] + "/"
    return None


def is_torchscript(file: str | Path | IO[bytes]) -> bool:
    """Is ``file`` a TorchScript archive (a zip with ``data.pkl`` and ``constants.pkl``)?"""
    try:
        with zipfile.ZipFile(file) as archive:
            return _archive_prefix(archive) is not None
    except (zipfile.BadZipFile, OSError):
        return False


_CLASS = re.compile(r"^class (\w+)\(Module\):\n  __parameters__ = (\[.*?\])\n  __buffers__ = (\[.*?\])$", re.M)


def _declared(archive: zipfile.ZipFile, prefix: str, qualname: str, source: str) -> tuple[list[str], list[str]]:
    """The parameter and buffer names of class ``qualname``, read as text from its source file."""
    module, _, cls = qualname.rpartition(".")
    path = f"{prefix}code/{module.replace('.', '/')}.py"
    try:
        text = archive.read(path).decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        raise ConversionError(f"{source}: no readable source {path} for class {qualname}") from None
    for m in _CLASS.finditer(text):
        if m.group(1) == cls:
            try:
                params, buffers = ast.literal_eval(m.group(2)), ast.literal_eval(m.group(3))
            except (ValueError, SyntaxError):
                break
            if all(isinstance(n, str) for n in (*params, *buffers)):
                return list(params), list(buffers)
            break
    raise ConversionError(
        f"{source}: cannot find the __parameters__/__buffers__ of module class {qualname} in {path}"
    )


def _state_dict(
    obj: _ScriptObject,
    archive: zipfile.ZipFile,
    prefix: str,
    source: str,
    path: str,
    out: dict[str, np.ndarray],
    ancestors: tuple[int, ...] = (),
) -> None:
    # torch's Module.state_dict order: own parameters, own buffers, then submodules in order.
    where = path.rstrip(".") or "the root module"
    if id(obj) in ancestors:
        raise ConversionError(f"{source}: {where} contains itself (a cycle in the module tree)")
    if not isinstance(getattr(obj, "state", None), dict):
        raise ConversionError(
            f"{source}: {where} ({obj.qualname}) has its own __getstate__/__setstate__; jsuff reads "
            "TorchScript archives as data and never runs their code, so it cannot convert this file"
        )
    params, buffers = _declared(archive, prefix, obj.qualname, source)
    for name in (*params, *buffers):
        value = obj.state.get(name)
        if value is None:  # an optional parameter that is absent (bias=False)
            continue
        if not isinstance(value, np.ndarray):
            raise ConversionError(f"{source}: {path}{name} is declared a tensor but holds {type(value).__name__}")
        out[path + name] = value
    for name, value in obj.state.items():
        if isinstance(value, _ScriptObject) and name not in params and name not in buffers:
            _state_dict(value, archive, prefix, source, f"{path}{name}.", out, (*ancestors, id(obj)))


def read_torchscript(path: str | Path) -> dict[str, np.ndarray]:
    """``torch.jit.load(path).state_dict()`` as NumPy arrays, read as data: no code in the file runs.

    Raises:
        ConversionError: not a TorchScript archive, or one whose pickle asks for anything but
            tensors, lists and module records (named in the message).
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ConversionError(f"{path} is not a TorchScript archive (not a zip file: {e})") from None
    with archive:
        prefix = _archive_prefix(archive)
        if prefix is None:
            raise ConversionError(f"{path} is not a TorchScript archive (no data.pkl and constants.pkl)")
        has_order = prefix + "byteorder" in archive.namelist()  # older archives have none
        byteorder = archive.read(prefix + "byteorder").strip() if has_order else b"little"
        if byteorder != b"little":
            raise ConversionError(f"{path}: {byteorder.decode(errors='replace')}-endian archives are not supported")
        with archive.open(prefix + "data.pkl") as f:
            try:
                root = _Unpickler(f, archive, prefix, str(path)).load()
            except Exception as e:  # a malformed pickle raises many types; none of its code has run
                raise ConversionError(f"cannot read TorchScript archive {path}: {type(e).__name__}: {e}") from None
        if not isinstance(root, _ScriptObject):
            raise ConversionError(f"{path}: the archive's root is a {type(root).__name__}, not a module")
        out: dict[str, np.ndarray] = {}
        _state_dict(root, archive, prefix, str(path), "", out)
    return out
