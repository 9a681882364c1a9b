"""Write an .npz (a stored zip64 archive of .npy files) whose pieces are made and checksummed on a worker thread."""

from __future__ import annotations

import queue
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

_MAX = 0xFFFFFFFF
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01, zip's epoch: the same weights give the same bytes
_VERSION = 45  # zip64
_UTF8 = 0x800
_DEPTH = 4  # pieces in flight between the threads: bounds the memory the pipeline adds

# An entry is its name, its size in bytes and a function yielding its bytes in pieces.
Entry = tuple[str, int, Callable[[], Iterable[memoryview | bytes]]]


def _pieces(entries: Iterable[Entry], out: queue.Queue, stop: threading.Event) -> None:
    # Everything that costs CPU besides the write itself (the transposes that make each piece, the
    # first touch of the mapped caffemodel, the CRC-32) runs here, overlapping the main thread's
    # writes; numpy copies, zlib.crc32 and file writes all release the GIL.
    try:
        for name, size, pieces in entries:
            out.put(("entry", name, size))
            crc = 0
            for piece in pieces():
                if stop.is_set():
                    return
                crc = zlib.crc32(piece, crc)
                out.put(("piece", piece, None))
            out.put(("crc", crc, None))
        out.put(("done", None, None))
    except BaseException as error:  # noqa: BLE001 - re-raised by the writing thread
        out.put(("error", error, None))


def _stop(worker: threading.Thread, out: queue.Queue, stop: threading.Event) -> None:
    stop.set()
    while worker.is_alive():
        try:
            out.get(timeout=0.05)  # unblocks a worker waiting to put
        except queue.Empty:
            pass


def _received(out: queue.Queue) -> Iterator[tuple]:
    while True:
        item = out.get()
        if item[0] == "error":
            raise item[1]
        if item[0] == "done":
            return
        yield item


def write_npz_entries(destination: str | Path, entries: Iterable[Entry]) -> None:
    """Write ``entries`` as a zip with every member stored (what ``np.savez`` writes, and ``np.load`` reads)."""
    pipe: queue.Queue = queue.Queue(maxsize=_DEPTH)
    stop = threading.Event()
    worker = threading.Thread(target=_pieces, args=(entries, pipe, stop), daemon=True)
    central = []
    with open(destination, "wb", buffering=0) as file:
        worker.start()
        try:
            offset = 0
            for kind, value, announced in _received(pipe):
                if kind == "entry":
                    name, encoded = value, value.encode()
                    flags = 0 if value.isascii() else _UTF8
                    size = announced
                    current = [encoded, flags, size, offset]
                    header = struct.pack(
                        "<IHHHHHIIIHH", 0x04034B50, _VERSION, flags, 0, 0, _DOS_DATE, 0, _MAX, _MAX, len(encoded), 20
                    )
                    offset += _write_all(file, header + encoded + struct.pack("<HHQQ", 1, 16, size, size))
                    start = offset
                elif kind == "piece":
                    offset += _write_all(file, value)
                else:
                    if offset - start != size:
                        raise ValueError(f"{name}: {offset - start} bytes written, {size} announced")
                    # The CRC is known only after the data: patch it into the local header.
                    file.seek(current[3] + 14)
                    file.write(struct.pack("<I", value))
                    file.seek(offset)
                    central.append((*current, value))
        except BaseException:
            _stop(worker, pipe, stop)
            raise
        worker.join()
        _write_central_directory(file, central, offset)


def _write_all(file, data: memoryview | bytes) -> int:
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += file.write(view[done:])
    return done


def _write_central_directory(file, central: list, start: int) -> None:
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
    _write_all(file, directory + zip64_end + locator + record)
