"""Append-only, checksummed edit log.

Every label change (a stroke, an undo, a slice marked annotated) is one record. A record is
written with a single ``write`` on an ``O_APPEND`` descriptor *before* the labels array is
touched, so a crash at any moment loses at most the record in flight. Reopening replays the
records the labels array has not seen yet.

Record layout (little endian)::

    magic  b"ALE1"   4 bytes
    length uint32    payload length
    seq    uint64    1, 2, 3, ...
    crc    uint32    crc32 of seq (8 bytes) + payload
    payload:         meta_len uint32 | meta JSON (utf-8) | arrays, raw, in the order meta["arrays"] lists

A record cut short at the end of the file is a torn write (the edit in flight when a process
died): it was never acknowledged and is truncated on repair. Any damage *before* the last
record is corruption and raises :class:`~al_annotator.errors.EditLogCorruptError`.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator

import numpy as np

from ..errors import EditLogCorruptError

__all__ = ["LogRecord", "EditLog", "FileLogBackend", "MemoryLogBackend", "encode_record", "scan_records"]

MAGIC = b"ALE1"
_HEADER = struct.Struct("<4sIQI")
HEADER_SIZE = _HEADER.size
_MAX_PAYLOAD = 1 << 31


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One decoded record: a JSON-able ``meta`` dict and named numpy arrays."""

    seq: int
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    offset: int = 0
    size: int = 0

    @property
    def kind(self) -> str:
        return self.meta["type"]


def encode_record(seq: int, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise one record (header + payload)."""
    specs = []
    blobs = []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        specs.append([name, arr.dtype.str, list(arr.shape)])
        blobs.append(arr.tobytes())
    meta = dict(meta, arrays=specs)
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    payload = struct.pack("<I", len(meta_bytes)) + meta_bytes + b"".join(blobs)
    crc = zlib.crc32(struct.pack("<Q", seq) + payload)
    return _HEADER.pack(MAGIC, len(payload), seq, crc) + payload


def _decode_payload(seq: int, payload: bytes, offset: int, size: int) -> LogRecord:
    (meta_len,) = struct.unpack_from("<I", payload, 0)
    meta = json.loads(payload[4 : 4 + meta_len])
    pos = 4 + meta_len
    arrays: dict[str, np.ndarray] = {}
    for name, dtype, shape in meta.pop("arrays"):
        dt = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        nbytes = count * dt.itemsize
        arrays[name] = np.frombuffer(payload, dtype=dt, count=count, offset=pos).reshape(shape)
        pos += nbytes
    return LogRecord(seq=seq, meta=meta, arrays=arrays, offset=offset, size=size)


def scan_records(data: BinaryIO, start: int = 0, *, source: str = "edit log") -> tuple[list[LogRecord], int, int | None]:
    """Read every complete record from ``start``.

    Returns ``(records, good_end, torn_at)``: ``good_end`` is the offset after the last good
    record; ``torn_at`` is the offset of a torn final record (or ``None``).

    Raises
    ------
    EditLogCorruptError
        When a damaged record is followed by more data (corruption, not a torn write).
    """
    data.seek(0, io.SEEK_END)
    end = data.tell()
    data.seek(start)
    records: list[LogRecord] = []
    pos = start
    while pos < end:
        header = data.read(HEADER_SIZE)
        problem = None
        record_end = end  # where the damaged record would end; unknown -> treat as reaching EOF
        if len(header) < HEADER_SIZE:
            problem = "a header cut short"
        else:
            magic, length, seq, crc = _HEADER.unpack(header)
            if magic != MAGIC:
                problem, record_end = f"bad magic {magic!r}", pos + HEADER_SIZE
            elif length > _MAX_PAYLOAD:
                problem, record_end = f"an impossible payload length {length}", pos + HEADER_SIZE
            else:
                record_end = pos + HEADER_SIZE + length
                payload = data.read(length)
                if len(payload) < length:
                    problem = f"a payload cut short ({len(payload)} of {length} bytes)"
                elif zlib.crc32(struct.pack("<Q", seq) + payload) != crc:
                    problem = "a checksum mismatch"
                elif records and seq != records[-1].seq + 1:
                    problem = f"sequence number {seq} after {records[-1].seq}"
        if problem is not None:
            # A damaged record that reaches the end of the file is a torn write (never acknowledged).
            if record_end >= end:
                return records, pos, pos
            last = records[-1].seq if records else 0
            raise EditLogCorruptError(pos, last,
                f"{source} is damaged at byte {pos} (after record {last}): {problem}, with "
                f"{end - pos} bytes following. The labels up to record {last} are intact. Keep a copy of the "
                f"project, then run `al-annotator check PROJECT --repair` to move the damaged tail aside "
                f"(it is kept as a .damaged file, never deleted)."
            )
        size = HEADER_SIZE + length
        records.append(_decode_payload(seq, payload, pos, size))
        pos += size
    return records, pos, None


class FileLogBackend:
    """The log as a file on disk, appended with ``O_APPEND`` and optionally fsync'ed."""

    def __init__(self, path: str | os.PathLike, *, fsync: bool = True) -> None:
        self.path = os.fspath(path)
        self.fsync = fsync
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def append(self, blob: bytes) -> None:
        fd = self._open()
        written = os.write(fd, blob)
        if written != len(blob):  # pragma: no cover - only on a full disk
            raise OSError(f"short write to {self.path}: {written} of {len(blob)} bytes (disk full?)")
        if self.fsync:
            os.fsync(fd)

    def reader(self) -> BinaryIO:
        if not os.path.exists(self.path):
            return io.BytesIO(b"")
        return open(self.path, "rb")

    def size(self) -> int:
        try:
            return os.path.getsize(self.path)
        except FileNotFoundError:
            return 0

    def truncate(self, offset: int) -> bytes:
        """Cut the file at ``offset``; returns the bytes removed (for a ``.damaged`` copy)."""
        with open(self.path, "r+b") as fh:
            fh.seek(offset)
            tail = fh.read()
            fh.truncate(offset)
            fh.flush()
            os.fsync(fh.fileno())
        return tail

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class MemoryLogBackend:
    """The log in memory (for the in-memory store used in tests and throw-away sessions)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def append(self, blob: bytes) -> None:
        self.buffer += blob

    def reader(self) -> BinaryIO:
        return io.BytesIO(bytes(self.buffer))

    def size(self) -> int:
        return len(self.buffer)

    def truncate(self, offset: int) -> bytes:
        tail = bytes(self.buffer[offset:])
        del self.buffer[offset:]
        return tail

    def close(self) -> None:
        pass


class EditLog:
    """Sequenced records on a backend. Not thread- or process-safe by itself: the store holds a lock."""

    def __init__(self, backend: FileLogBackend | MemoryLogBackend, *, source: str = "edit log") -> None:
        self.backend = backend
        self.source = source
        self.last_seq = 0
        self.end = 0

    def read_all(self) -> tuple[list[LogRecord], int | None]:
        with self.backend.reader() as fh:
            records, good_end, torn_at = scan_records(fh, 0, source=self.source)
        self.last_seq = records[-1].seq if records else 0
        self.end = good_end
        return records, torn_at

    def read_new(self) -> list[LogRecord]:
        """Records appended (by this or another process) since the last read."""
        if self.backend.size() == self.end:
            return []
        with self.backend.reader() as fh:
            records, good_end, _ = scan_records(fh, self.end, source=self.source)
        if records:
            self.last_seq = records[-1].seq
        self.end = good_end
        return records

    def append(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> LogRecord:
        """Append one record (durable when this returns); returns it with its offset."""
        seq = self.last_seq + 1
        blob = encode_record(seq, meta, arrays)
        offset = self.end
        self.backend.append(blob)
        self.last_seq = seq
        self.end += len(blob)
        return LogRecord(seq=seq, meta=meta, arrays=arrays, offset=offset, size=len(blob))

    def __iter__(self) -> Iterator[LogRecord]:
        records, _ = self.read_all()
        return iter(records)
