"""Read TensorFlow checkpoints (the V2 "tensor bundle" format) without TensorFlow.

A checkpoint with prefix ``P`` is two kinds of files:

* ``P.index``: a LevelDB-style table (an SSTable) mapping each tensor name to a serialized
  ``BundleEntryProto`` (dtype, shape, shard, byte offset, byte size, masked CRC32C of the bytes);
  the empty key holds a ``BundleHeaderProto`` (number of shards, endianness, version);
* ``P.data-SSSSS-of-NNNNN``: the tensors' raw bytes, back to back, in the header's byte order.

This module decodes both with the standard library and NumPy: the table's blocks, restart arrays
and footer; the few protobuf messages involved, by their wire format (no generated code, no
``protobuf`` dependency); every block's and every tensor's CRC32C, so a corrupt or truncated file
is an error that names the file and the tensor, never silently wrong numbers. Only what TF's own
writer produces is accepted: uncompressed blocks, whole (unsliced) tensors of numeric dtypes.

Why a reader of our own: the only complete reader is TensorFlow (``tf.train.load_checkpoint``),
which jsuff must not depend on; no maintained, TF-free library reads this format.

Example:
    >>> crc32c(b"123456789") == 0xE3069283
    True
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from converters.common import ConversionError

__all__ = ["BundleError", "TensorEntry", "crc32c", "read_bundle", "read_index"]

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the 8-byte magic
BLOCK_TRAILER = 5  # compression type byte + masked CRC32C
_MASK_DELTA = 0xA282EAD8

# tensorflow/core/framework/types.proto: the numeric dtypes a bundle may hold as raw bytes.
DTYPES: dict[int, str] = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 9: "int64", 10: "bool",
    17: "uint16", 19: "float16", 22: "uint32", 23: "uint64",
}


class BundleError(ConversionError):
    """A tensor bundle that cannot be read; the message names the file and what is wrong."""


# ----------------------------------------------------------------------------------------------
# CRC32C (Castagnoli), as TF and LevelDB checksum blocks and tensors
# ----------------------------------------------------------------------------------------------


def _crc_table() -> np.ndarray:
    table = np.zeros(256, np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table[i] = c
    table.setflags(write=False)
    return table


_TABLE = _crc_table()


def _raw_serial(data: np.ndarray, crc: int) -> int:
    table = _TABLE.tolist()
    for b in data.tolist():
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def _feed_zeros(crc: np.ndarray, n: int) -> np.ndarray:
    for _ in range(n):
        crc = _TABLE[crc & 0xFF] ^ (crc >> 8)
    return crc


def _raw_parallel(data: np.ndarray, lanes: int) -> int:
    # The register update is linear over GF(2), so the data is cut into `lanes` equal chunks
    # (zeros prepended, which leave a zero register unchanged), each chunk's CRC from a zero
    # register is computed at once with vector ops, and the chunk CRCs are folded left to right:
    # crc(A || B) = shift_len(B)(crc(A)) ^ crc(B), where shift_k feeds k zero bytes.
    length = -(-data.size // lanes)
    padded = np.zeros(lanes * length, np.uint8)
    padded[padded.size - data.size :] = data
    columns = np.ascontiguousarray(padded.reshape(lanes, length).T)
    crc = np.zeros(lanes, np.uint32)
    for col in columns:
        crc = _TABLE[(crc ^ col) & 0xFF] ^ (crc >> 8)
    # shift_length as the images of the 32 unit registers
    basis = _feed_zeros(np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32)), length)
    bits = np.arange(32, dtype=np.uint32)
    out = np.uint32(0)
    for chunk in crc:
        mask = ((out >> bits) & 1).astype(bool)
        out = np.bitwise_xor.reduce(basis[mask], initial=np.uint32(0)) ^ chunk
    return int(out)


def crc32c(data: bytes | np.ndarray) -> int:
    """The CRC32C (Castagnoli) of ``data``, as an unsigned 32-bit integer.

    Megabytes take well under a second: long inputs are checksummed in parallel lanes.

    Example:
        >>> hex(crc32c(b""))
        '0x0'
    """
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    buf = np.asarray(buf, np.uint8).reshape(-1)
    if buf.size < 4096:
        return _raw_serial(buf, 0xFFFFFFFF) ^ 0xFFFFFFFF
    # Starting from 0xFFFFFFFF is the same as starting from 0 with the first 4 bytes inverted
    # (for a reflected CRC, the initial register is consumed by the first 32 bits of data).
    head = buf.copy()
    head[:4] ^= 0xFF
    lanes = int(min(4096, max(1, np.sqrt(buf.size))))
    return _raw_parallel(head, lanes) ^ 0xFFFFFFFF


def unmask(masked: int) -> int:
    """Undo LevelDB's CRC masking (``masked = rotate_right(crc, 15) + 0xa282ead8``)."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ----------------------------------------------------------------------------------------------
# Wire formats: varints, protobuf fields, table blocks
# ----------------------------------------------------------------------------------------------


class _Truncated(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Truncated("varint runs past its buffer")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` of a serialized protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise _Truncated("fixed64 field runs past its message")
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 5:
            if pos + 4 > len(buf):
                raise _Truncated("fixed32 field runs past its message")
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise _Truncated("length-delimited field runs past its message")
            value, pos = bytes(buf[pos : pos + size]), pos + size
        else:
            raise _Truncated(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _block(file: bytes, offset: int, size: int, where: str) -> bytes:
    """The contents of one table block, its trailer checked."""
    end = offset + size + BLOCK_TRAILER
    if offset < 0 or size < 0 or end > len(file):
        raise BundleError(f"{where}: block at {offset} (+{size} bytes) runs past the end of the file (truncated?)")
    contents = file[offset : offset + size]
    kind = file[offset + size]
    (stored,) = struct.unpack_from("<I", file, offset + size + 1)
    if crc32c(file[offset : offset + size + 1]) != unmask(stored):
        raise BundleError(f"{where}: block at {offset} fails its CRC32C check (corrupt file)")
    if kind != 0:
        raise BundleError(f"{where}: block at {offset} is compressed (type {kind}); only uncompressed tables are read")
    return contents


def _block_entries(block: bytes, where: str) -> Iterator[tuple[bytes, bytes]]:
    """The ``(key, value)`` entries of a table block (keys are prefix-compressed)."""
    if len(block) < 4:
        raise BundleError(f"{where}: block too short for its restart count")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise BundleError(f"{where}: block's restart array ({restarts} entries) exceeds the block")
    pos, key = 0, b""
    try:
        while pos < limit:
            shared, pos = _varint(block, pos)
            unshared, pos = _varint(block, pos)
            vsize, pos = _varint(block, pos)
            if shared > len(key) or pos + unshared + vsize > limit:
                raise _Truncated("entry runs past its block")
            key = key[:shared] + block[pos : pos + unshared]
            pos += unshared
            yield key, block[pos : pos + vsize]
            pos += vsize
    except _Truncated as e:
        raise BundleError(f"{where}: malformed block entry ({e})") from None


def _table_entries(file: bytes, where: str) -> Iterator[tuple[bytes, bytes]]:
    """Every ``(key, value)`` of an SSTable, in key order."""
    if len(file) < FOOTER_SIZE:
        raise BundleError(f"{where}: {len(file)} bytes is too short for a table footer (truncated?)")
    lo, hi = struct.unpack_from("<II", file, len(file) - 8)
    if (hi << 32) | lo != TABLE_MAGIC:
        raise BundleError(f"{where}: no table magic number at the end (not a checkpoint index, or truncated)")
    footer = file[len(file) - FOOTER_SIZE :]
    try:
        _meta_offset, pos = _varint(footer, 0)
        _meta_size, pos = _varint(footer, pos)
        index_offset, pos = _varint(footer, pos)
        index_size, pos = _varint(footer, pos)
    except _Truncated:
        raise BundleError(f"{where}: malformed table footer") from None
    for _separator, handle in _block_entries(_block(file, index_offset, index_size, where), where):
        try:
            offset, pos = _varint(handle, 0)
            size, _ = _varint(handle, pos)
        except _Truncated:
            raise BundleError(f"{where}: malformed block handle in the table index") from None
        yield from _block_entries(_block(file, offset, size, where), where)


# ----------------------------------------------------------------------------------------------
# Bundle entries
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: ``BundleEntryProto`` decoded.

    Attributes:
        name: the tensor (variable) name.
        dtype: its NumPy dtype name (``"float32"`` ...).
        shape: its shape.
        shard: which ``.data-*`` file holds it.
        offset: byte offset in that file.
        size: byte length.
        crc32c: the CRC32C of those bytes (unmasked).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int


def _shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for number, _wire, value in _fields(buf):
        if number == 2:
            size = 0
            for n, _w, v in _fields(value):  # type: ignore[arg-type]
                if n == 1:
                    size = _signed64(v)  # type: ignore[arg-type]
            dims.append(size)
        elif number == 3 and value:
            raise _Truncated("shape of unknown rank")
    if any(d < 0 for d in dims):
        raise _Truncated(f"shape with unknown dimensions {dims}")
    return tuple(dims)


def _entry(name: str, buf: bytes) -> TensorEntry:
    f: dict[str, int | tuple[int, ...]] = {"dtype": 0, "shard": 0, "offset": 0, "size": 0, "crc": 0}
    shape: tuple[int, ...] = ()
    for number, _wire, value in _fields(buf):
        if number == 1:
            f["dtype"] = value  # type: ignore[assignment]
        elif number == 2:
            shape = _shape(value)  # type: ignore[arg-type]
        elif number == 3:
            f["shard"] = value  # type: ignore[assignment]
        elif number == 4:
            f["offset"] = _signed64(value)  # type: ignore[arg-type]
        elif number == 5:
            f["size"] = _signed64(value)  # type: ignore[arg-type]
        elif number == 6:
            f["crc"] = unmask(value)  # type: ignore[arg-type]
        elif number == 7:
            raise _Truncated("sliced (partitioned) tensors are not supported")
    if f["dtype"] not in DTYPES:
        raise _Truncated(f"unsupported dtype enum {f['dtype']} (numeric dtypes only: {sorted(DTYPES)})")
    dtype = DTYPES[f["dtype"]]  # type: ignore[index]
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if f["size"] != expected:
        raise _Truncated(f"{f['size']} bytes do not hold a {dtype} tensor of shape {shape} ({expected} bytes)")
    return TensorEntry(name, dtype, shape, f["shard"], f["offset"], f["size"], f["crc"])  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class _Index:
    num_shards: int
    big_endian: bool
    entries: dict[str, TensorEntry]


def _prefix(prefix: str | os.PathLike) -> str:
    # A directory stands for the unnamed prefix inside it ("<dir>/.index"), which is how
    # musicnn saved its checkpoints.
    text = os.fspath(prefix)
    return os.path.join(text, "") if os.path.isdir(text) else text


def _read_index(prefix: str) -> _Index:
    path = Path(prefix + ".index")
    if not path.is_file():
        raise BundleError(f"checkpoint index not found: {path}")
    file = path.read_bytes()
    where = str(path)
    num_shards, big_endian, header_seen = 1, False, False
    entries: dict[str, TensorEntry] = {}
    for key, value in _table_entries(file, where):
        try:
            if key == b"":
                header_seen = True
                for number, _wire, v in _fields(value):
                    if number == 1:
                        num_shards = v  # type: ignore[assignment]
                    elif number == 2:
                        big_endian = v == 1
                continue
            name = key.decode("utf-8")
            entries[name] = _entry(name, value)
        except (_Truncated, UnicodeDecodeError) as e:
            raise BundleError(f"{where}: entry {key[:80]!r}: {e}") from None
    if not header_seen:
        raise BundleError(f"{where}: no bundle header (not a TF2-style V2 checkpoint index)")
    if num_shards < 1:
        raise BundleError(f"{where}: header declares {num_shards} shards")
    for e in entries.values():
        if not 0 <= e.shard < num_shards:
            raise BundleError(f"{where}: tensor {e.name!r} is in shard {e.shard} of {num_shards}")
    return _Index(num_shards, big_endian, entries)


def read_index(prefix: str | os.PathLike) -> dict[str, TensorEntry]:
    """The tensors a checkpoint holds, by name, without reading their data.

    Args:
        prefix: the checkpoint prefix (``model.ckpt-1000`` for ``model.ckpt-1000.index``), or a
            directory whose files are named ``.index`` and ``.data-*`` (an empty prefix).

    Raises:
        BundleError: a missing, truncated or corrupt index (the message says which and where).
    """
    return dict(_read_index(_prefix(prefix)).entries)


def read_bundle(
    prefix: str | os.PathLike, names: Iterable[str] | None = None, *, verify: bool = True
) -> dict[str, np.ndarray]:
    """Read tensors of a TF checkpoint as NumPy arrays (native byte order).

    Args:
        prefix: as for :func:`read_index`.
        names: the tensors to read (default: all of them).
        verify: check each tensor's CRC32C against the index.

    Raises:
        BundleError: unknown names (all listed, with what exists), a missing or short data file,
            or bytes that fail their checksum.

    Example:
        >>> read_bundle("no/such/checkpoint")
        Traceback (most recent call last):
        ...
        converters.tf_bundle.BundleError: checkpoint index not found: no/such/checkpoint.index
    """
    text = _prefix(prefix)
    index = _read_index(text)
    wanted = sorted(index.entries) if names is None else list(names)
    unknown = [n for n in wanted if n not in index.entries]
    if unknown:
        raise BundleError(
            f"{text}.index has no tensor(s) {', '.join(map(repr, unknown))}; "
            f"it holds: {', '.join(sorted(index.entries))}"
        )
    shards: dict[int, bytes] = {}
    out: dict[str, np.ndarray] = {}
    for name in wanted:
        e = index.entries[name]
        if e.shard not in shards:
            path = Path(f"{text}.data-{e.shard:05d}-of-{index.num_shards:05d}")
            if not path.is_file():
                raise BundleError(f"checkpoint data file not found: {path}")
            shards[e.shard] = path.read_bytes()
        data = shards[e.shard]
        where = f"{text}.data-{e.shard:05d}-of-{index.num_shards:05d}"
        if e.offset < 0 or e.offset + e.size > len(data):
            raise BundleError(
                f"{where}: tensor {name!r} needs bytes {e.offset}..{e.offset + e.size} of {len(data)} (truncated?)"
            )
        raw = np.frombuffer(data, np.uint8, e.size, e.offset)
        if verify and crc32c(raw) != e.crc32c:
            raise BundleError(f"{where}: tensor {name!r} fails its CRC32C check (corrupt file)")
        dtype = np.dtype(e.dtype).newbyteorder(">" if index.big_endian else "<")
        out[name] = raw.view(dtype).reshape(e.shape).astype(np.dtype(e.dtype))
    return out
