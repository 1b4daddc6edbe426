"""converters/tf_bundle.py: TF checkpoints read without TensorFlow.

The bundles here are built byte by byte by a writer in this file (protobuf wire format, LevelDB
table blocks with prefix-compressed keys, block trailers, footer), which shares no code with the
reader; CRC32C is checked against the standard's test vectors and a bit-at-a-time reference.
"""

import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

from converters.tf_bundle import BundleError, crc32c, read_bundle, read_index, unmask

# ----------------------------------------------------------------------------------------------
# An independent writer
# ----------------------------------------------------------------------------------------------


def crc_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def field_fixed32(number: int, value: int) -> bytes:
    return varint(number << 3 | 5) + struct.pack("<I", value)


def entry_proto(dtype: int, shape, offset: int, data: bytes, *, shard: int = 0, sliced: bool = False) -> bytes:
    dims = b"".join(field_bytes(2, field_varint(1, d)) for d in shape)
    msg = field_varint(1, dtype) + field_bytes(2, dims)
    if shard:
        msg += field_varint(3, shard)
    msg += field_varint(4, offset) + field_varint(5, len(data)) + field_fixed32(6, mask(crc_bitwise(data)))
    if sliced:
        msg += field_bytes(7, b"")
    return msg


def block(entries) -> bytes:
    """A table block, every key prefix-compressed against the previous one, one restart at 0."""
    out, prev = bytearray(), b""
    for key, value in entries:
        shared = 0
        while shared < min(len(key), len(prev)) and key[shared] == prev[shared]:
            shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        prev = key
    return bytes(out) + struct.pack("<II", 0, 1)


def table(entries, per_block: int = 2) -> bytes:
    """An SSTable: data blocks of ``per_block`` entries, an empty meta-index, an index, a footer."""
    out, index = bytearray(), []

    def put(contents: bytes) -> bytes:
        handle = varint(len(out)) + varint(len(contents))
        out.extend(contents + b"\x00" + struct.pack("<I", mask(crc_bitwise(contents + b"\x00"))))
        return handle

    for i in range(0, len(entries), per_block):
        chunk = entries[i : i + per_block]
        index.append((chunk[-1][0], put(block(chunk))))
    meta = put(block([]))
    idx = put(block(index))
    footer = (meta + idx).ljust(40, b"\x00") + struct.pack("<Q", 0xDB4775248B80FB57)
    return bytes(out) + footer


TENSORS = {
    "conv/bias": np.arange(3, dtype=np.float32) - 1.5,
    "conv/kernel": np.random.default_rng(0).standard_normal((2, 3, 1, 3)).astype(np.float32),
    "global_step": np.array(12345, np.int64),
    "half": np.array([1.0, -2.5, 65504.0, 6e-8], np.float16),
    "empty": np.zeros((0, 4), np.float32),
}
DTYPE_ENUM = {np.float32: 1, np.int64: 9, np.float16: 19}


def write_bundle(prefix: Path, tensors=TENSORS, *, big_endian: bool = False, shards: int = 1, **entry_kw) -> None:
    data = {s: bytearray() for s in range(shards)}
    entries = []
    for i, (name, value) in enumerate(sorted(tensors.items())):
        shard = i % shards
        raw = value.astype(value.dtype.newbyteorder(">" if big_endian else "<")).tobytes()
        proto = entry_proto(DTYPE_ENUM[value.dtype.type], value.shape, len(data[shard]), raw, shard=shard, **entry_kw)
        entries.append((name.encode(), proto))
        data[shard] += raw
    header = field_varint(1, shards) + field_varint(2, int(big_endian)) + field_bytes(3, field_varint(1, 1))
    Path(f"{prefix}.index").write_bytes(table([(b"", header), *entries]))
    for s, raw in data.items():
        Path(f"{prefix}.data-{s:05d}-of-{shards:05d}").write_bytes(bytes(raw))


def assert_same(got, expected):
    assert sorted(got) == sorted(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v)


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


def test_crc32c_vectors_and_reference():
    # RFC 3720 (iSCSI) B.4 test vectors and the usual check value.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    rng = np.random.default_rng(1)
    # Sizes on both sides of the parallel path's threshold, and ones that do not split evenly.
    for n in (0, 1, 3, 4, 5, 4095, 4096, 4097, 10007):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == crc_bitwise(data), n
    assert unmask(mask(0xDEADBEEF)) == 0xDEADBEEF


def test_hand_built_bundle_round_trip(tmp_path):
    write_bundle(tmp_path / "model.ckpt-7")
    index = read_index(tmp_path / "model.ckpt-7")
    assert sorted(index) == sorted(TENSORS)
    assert index["conv/kernel"].shape == (2, 3, 1, 3) and index["conv/kernel"].dtype == "float32"
    assert index["global_step"].shape == () and index["half"].dtype == "float16"
    assert_same(read_bundle(tmp_path / "model.ckpt-7"), TENSORS)
    assert_same(read_bundle(tmp_path / "model.ckpt-7", ["half"]), {"half": TENSORS["half"]})


def test_directory_means_the_empty_prefix(tmp_path):
    # musicnn's checkpoints are "<dir>/.index" and "<dir>/.data-00000-of-00001".
    write_bundle(f"{tmp_path}/")
    assert (tmp_path / ".index").is_file()
    assert_same(read_bundle(tmp_path), TENSORS)


def test_big_endian_and_shards(tmp_path):
    write_bundle(tmp_path / "be", big_endian=True, shards=2)
    got = read_bundle(tmp_path / "be")
    assert_same(got, TENSORS)
    assert all(v.dtype.isnative for v in got.values())


def test_unknown_names_are_listed(tmp_path):
    write_bundle(tmp_path / "m")
    with pytest.raises(BundleError, match=r"no tensor\(s\) 'nope', 'conv/weight'; it holds: conv/bias, conv/kernel"):
        read_bundle(tmp_path / "m", ["nope", "conv/weight", "conv/bias"])


def test_missing_files(tmp_path):
    with pytest.raises(BundleError, match="checkpoint index not found"):
        read_index(tmp_path / "absent")
    write_bundle(tmp_path / "m")
    (tmp_path / "m.data-00000-of-00001").unlink()
    with pytest.raises(BundleError, match="data file not found"):
        read_bundle(tmp_path / "m")


@pytest.mark.parametrize("cut", [1, 10, 47, 200])
def test_truncated_index(tmp_path, cut):
    write_bundle(tmp_path / "m")
    path = tmp_path / "m.index"
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(BundleError, match=r"m\.index"):
        read_index(tmp_path / "m")


def test_corrupt_index_block(tmp_path):
    write_bundle(tmp_path / "m")
    path = tmp_path / "m.index"
    raw = bytearray(path.read_bytes())
    raw[5] ^= 0x10  # inside the first data block
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="fails its CRC32C check"):
        read_index(tmp_path / "m")


def test_truncated_and_corrupt_data(tmp_path):
    write_bundle(tmp_path / "m")
    data = tmp_path / "m.data-00000-of-00001"
    raw = data.read_bytes()
    data.write_bytes(raw[:-3])
    with pytest.raises(BundleError, match=r"tensor 'half' needs bytes .* \(truncated\?\)"):
        read_bundle(tmp_path / "m")
    flipped = bytearray(raw)
    flipped[0] ^= 1  # the first tensor in key order: conv/bias
    data.write_bytes(bytes(flipped))
    with pytest.raises(BundleError, match="tensor 'conv/bias' fails its CRC32C check"):
        read_bundle(tmp_path / "m")
    # Without verification the bytes are taken as they are (documented).
    assert read_bundle(tmp_path / "m", ["conv/bias"], verify=False)["conv/bias"][0] != TENSORS["conv/bias"][0]


def test_unsupported_entries(tmp_path):
    write_bundle(tmp_path / "s", sliced=True)
    with pytest.raises(BundleError, match="sliced"):
        read_index(tmp_path / "s")
    prefix = tmp_path / "t"
    proto = entry_proto(7, (2,), 0, bytes(8))  # DT_STRING
    Path(f"{prefix}.index").write_bytes(table([(b"", field_varint(1, 1)), (b"names", proto)]))
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(8))
    with pytest.raises(BundleError, match="unsupported dtype enum 7"):
        read_index(prefix)


def test_size_must_match_shape(tmp_path):
    prefix = tmp_path / "z"
    proto = entry_proto(1, (3,), 0, bytes(8))  # 3 float32 need 12 bytes
    Path(f"{prefix}.index").write_bytes(table([(b"", field_varint(1, 1)), (b"x", proto)]))
    with pytest.raises(BundleError, match="8 bytes do not hold a float32 tensor of shape"):
        read_index(prefix)


def test_not_a_table(tmp_path):
    (tmp_path / "j.index").write_bytes(b"{" + b" " * 100 + b"}")
    with pytest.raises(BundleError, match="no table magic number"):
        read_index(tmp_path / "j")


def test_real_musicnn_checkpoint():
    spec = importlib.util.find_spec("musicnn")
    if spec is None:
        pytest.skip("musicnn is not installed; `make setup-real` installs it (pip install --no-deps musicnn)")
    folder = Path(spec.submodule_search_locations[0]) / "MTT_vgg"
    index = read_index(folder)
    assert index["1CNN/kernel"].shape == (3, 3, 1, 128) and index["dense/kernel"].shape == (256, 50)
    got = read_bundle(folder, ["batch_normalization/moving_variance", "dense/bias"])
    assert got["dense/bias"].shape == (50,) and got["batch_normalization/moving_variance"][0] > 0
