"""Write an .npz (a stored zip64 archive of .npy files) from arrays of any layout, in small cache-sized pieces."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

_MAX = 0xFFFFFFFF
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01, zip's epoch: the same weights give the same bytes
_VERSION = 45  # zip64
_UTF8 = 0x800
# A piece small enough to stay in the CPU's cache from its copy through its CRC to its write (one
# buffer, reused: VGG16's weights took about 0.7 s of CPU so, 1.0 s with 1 MB pieces).
_PIECE_BYTES = 1 << 18

# A member: its name, its .npy header, and the array whose bytes in C order follow the header.
Member = tuple[str, bytes, np.ndarray]


def _pieces(array: np.ndarray, buffer: np.ndarray) -> Iterator[memoryview]:
    """``array``'s bytes in C order: slices of it where it is contiguous, else copies into ``buffer``."""
    per_piece = _PIECE_BYTES // array.itemsize
    if array.flags.c_contiguous:
        flat = array.reshape(-1)
        for start in range(0, flat.size, per_piece):
            yield flat[start : start + per_piece].data
        return
    # Copy the largest blocks that fit a piece: whole trailing axes, and a run of the axis before them.
    shape = array.shape
    axis, inner = len(shape), 1
    while axis > 0 and inner * shape[axis - 1] <= per_piece:
        axis -= 1
        inner *= shape[axis]
    if axis == 0:
        blocks: Iterable[tuple] = [()]
    else:
        axis -= 1
        step = max(1, per_piece // inner)
        blocks = (
            (*index, slice(start, start + step))
            for index in np.ndindex(*shape[:axis])
            for start in range(0, shape[axis], step)
        )
    for block in blocks:
        source = array[block]
        target = buffer.view(array.dtype)[: source.size].reshape(source.shape)
        np.copyto(target, source)
        yield target.data


def write_npz_members(destination: str | Path, members: Iterable[Member]) -> None:
    """Write ``members`` as a zip with every member stored (what ``np.savez`` writes, and ``np.load`` reads)."""
    buffer = np.empty(_PIECE_BYTES, np.uint8)
    central = []
    # Not opened with O_TRUNC ("wb"): truncating a file to empty and writing it again makes ext4 start
    # writing all of it back to disk when it is closed (its auto_da_alloc heuristic; 0.2 s for VGG16's
    # weights). Whatever was in the file beyond the new end is cut off at the end instead.
    with open(os.open(destination, os.O_WRONLY | os.O_CREAT, 0o666), "wb", buffering=0) as file:
        offset = 0
        for name, header, array in members:
            encoded = name.encode()
            flags = 0 if name.isascii() else _UTF8
            size = len(header) + array.nbytes
            local = struct.pack(
                "<IHHHHHIIIHH", 0x04034B50, _VERSION, flags, 0, 0, _DOS_DATE, 0, _MAX, _MAX, len(encoded), 20
            )
            start = offset
            offset += _write_all(file, local + encoded + struct.pack("<HHQQ", 1, 16, size, size))
            offset += _write_all(file, header)
            crc = zlib.crc32(header)
            for piece in _pieces(array, buffer):
                crc = zlib.crc32(piece, crc)
                offset += _write_all(file, piece)
            # The CRC is known only after the data: patch it into the local header.
            file.seek(start + 14)
            file.write(struct.pack("<I", crc))
            file.seek(offset)
            central.append((encoded, flags, size, start, crc))
        file.truncate(_write_central_directory(file, central, offset))


def _write_all(file, data: memoryview | bytes) -> int:
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += file.write(view[done:])
    return done


def _write_central_directory(file, central: list, start: int) -> int:
    """Write the central directory at ``start``; returns where the archive ends."""
    records = []
    for encoded, flags, size, offset, crc in central:
        records.append(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                _VERSION,
                _VERSION,
                flags,
                0,
                0,
                _DOS_DATE,
                crc,
                _MAX,
                _MAX,
                len(encoded),
                28,
                0,
                0,
                0,
                0o644 << 16,
                _MAX,
            )
            + encoded
            + struct.pack("<HHQQQ", 1, 24, size, size, offset)
        )
    directory = b"".join(records)
    end = start + len(directory)
    count = len(central)
    zip64_end = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, _VERSION, _VERSION, 0, 0, count, count, len(directory), start)
    locator = struct.pack("<IIQI", 0x07064B50, 0, end, 1)
    record = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF), min(len(directory), _MAX), min(start, _MAX), 0
    )
    return start + _write_all(file, directory + zip64_end + locator + record)

