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
died): it was never acknowledged; the writer cuts it off and keeps its bytes aside. Any other
damage (a full-length record with a bad checksum, anywhere, the last one included) is *not* a
torn write: :func:`scan_records` skips it up to the next intact record, every reader reports it,
and its bytes are never rewritten. A failed append (a full disk) is cut back before the error is
raised, so the next record never lands behind garbage.
"""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator

import numpy as np

from ..errors import DiskFullError, StoreIntegrityError, StoreWriteError
from .perms import chmod_new_file


def _symlink_message(path: str) -> str:
    return (
        f"{path} is a symbolic link; a project's files must be regular files inside the project "
        "directory (a link could make al_annotator write somewhere else). Replace the link with a "
        "copy of its target, or remove it if it should not be there."
    )

__all__ = ["DamagedRange", "LogRecord", "EditLog", "FileLogBackend", "MemoryLogBackend", "ScanResult", "damaged_message", "encode_record", "scan_records"]

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
    if not isinstance(meta, dict) or not isinstance(meta.get("arrays"), list):
        raise ValueError("the record's metadata is not a JSON object with an array list")
    pos = 4 + meta_len
    arrays: dict[str, np.ndarray] = {}
    for name, dtype, shape in meta.pop("arrays"):
        dt = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        nbytes = count * dt.itemsize
        if pos + nbytes > len(payload):
            raise ValueError(f"array {name!r} runs past the end of the record")
        arrays[name] = np.frombuffer(payload, dtype=dt, count=count, offset=pos).reshape(shape)
        pos += nbytes
    return LogRecord(seq=seq, meta=meta, arrays=arrays, offset=offset, size=size)


def _payload_length_from_meta(payload: bytes) -> int | None:
    """The payload length the record's own metadata implies (to tell a damaged length field from a
    torn write), or ``None`` when the metadata cannot be read."""
    try:
        (meta_len,) = struct.unpack_from("<I", payload, 0)
        meta = json.loads(payload[4 : 4 + meta_len])
        total = 4 + meta_len
        for _name, dtype, shape in meta["arrays"]:
            total += (int(np.prod(shape)) if shape else 1) * np.dtype(dtype).itemsize
        return total
    except Exception:  # noqa: BLE001 - any garbage means "cannot tell"
        return None


@dataclass(frozen=True, slots=True)
class DamagedRange:
    """Bytes of the log that hold no readable record (bit rot, a overwritten block): skipped by every
    reader, never rewritten, reported by ``check``."""

    offset: int
    size: int
    reason: str
    after_seq: int


@dataclass(slots=True)
class ScanResult:
    records: list[LogRecord]
    good_end: int  # offset after the last byte accounted for (records and damaged ranges)
    torn_at: int | None  # offset of a torn final record (a prefix of a record, never acknowledged)
    damaged: list[DamagedRange]


def _valid_record_at(buf: bytes, pos: int) -> tuple[int, int, bytes] | None:
    """``(seq, size, payload)`` when a complete record with a good checksum starts at ``pos``."""
    if pos + HEADER_SIZE > len(buf):
        return None
    magic, length, seq, crc = _HEADER.unpack_from(buf, pos)
    if magic != MAGIC or length > _MAX_PAYLOAD or pos + HEADER_SIZE + length > len(buf):
        return None
    payload = buf[pos + HEADER_SIZE : pos + HEADER_SIZE + length]
    if zlib.crc32(struct.pack("<Q", seq) + payload) != crc:
        # the length field itself may be the damaged part: try the length the metadata implies
        implied = _payload_length_from_meta(payload)
        if implied is None or implied == length:
            return None
        payload = buf[pos + HEADER_SIZE : pos + HEADER_SIZE + implied]
        if len(payload) < implied or zlib.crc32(struct.pack("<Q", seq) + payload) != crc:
            return None
    return seq, HEADER_SIZE + len(payload), payload


def _next_valid_record(buf: bytes, start: int, after_seq: int) -> int | None:
    """The offset of the first intact record after ``start`` whose seq follows ``after_seq``."""
    pos = start
    while True:
        pos = buf.find(MAGIC, pos)
        if pos < 0:
            return None
        found = _valid_record_at(buf, pos)
        if found is not None and found[0] > after_seq:
            return pos
        pos += 1


def scan_records(data: BinaryIO, start: int = 0, *, source: str = "edit log", last_seq: int = 0) -> ScanResult:
    """Read every record from ``start``, telling a torn tail from damage.

    * A **torn** tail is a prefix of a record at the end of the file (a writer died inside its one
      ``write``; that edit was never acknowledged) or an all-zero tail (space the file system
      allocated and never filled). Only the store's writer truncates it, keeping the bytes aside.
    * **Damage** is anything else that fails its checks: a full-length record with a bad checksum,
      bad magic, an impossible length, a sequence number that goes back. It is skipped up to the
      next intact record (found by its magic and checksum), reported as a :class:`DamagedRange`, and
      never rewritten, so every record after it stays readable. A record whose only damage is its
      length field is recovered from the length its metadata implies.

    The scan is a pure function of the bytes, so every process agrees on what it skips.
    """
    data.seek(0, io.SEEK_END)
    end = data.tell()
    data.seek(start)
    records: list[LogRecord] = []
    damaged: list[DamagedRange] = []
    pos = start
    buf: bytes | None = None  # the rest of the file, read only when damage needs a resync
    while pos < end:
        header = data.read(HEADER_SIZE)
        problem = None
        torn = False
        if len(header) < HEADER_SIZE:
            problem, torn = "a header cut short", True
        else:
            magic, length, seq, crc = _HEADER.unpack(header)
            if magic != MAGIC:
                problem = f"bad magic {magic!r}"
            elif length > _MAX_PAYLOAD:
                problem = f"an impossible payload length {length}"
            else:
                payload = data.read(length)
                if len(payload) < length:
                    problem, torn = f"a payload cut short ({len(payload)} of {length} bytes)", True
                elif zlib.crc32(struct.pack("<Q", seq) + payload) != crc:
                    problem = "a checksum mismatch"
                elif seq <= last_seq:
                    problem = f"sequence number {seq} after {last_seq}"
                else:
                    try:
                        decoded = _decode_payload(seq, payload, pos, HEADER_SIZE + length)
                    except Exception as exc:  # noqa: BLE001 - a checksummed record a writer got wrong
                        problem = f"unreadable metadata ({exc})"
        if problem is not None:
            if buf is None:
                data.seek(start)
                buf = b"\0" * start + data.read()  # keep offsets absolute
            rescued = _valid_record_at(buf, pos)
            if rescued is not None and rescued[0] > last_seq:  # only the length field was damaged
                seq, size, payload = rescued
                try:
                    records.append(_decode_payload(seq, payload, pos, size))
                    last_seq = seq
                    pos += size
                    data.seek(pos)
                    continue
                except Exception:  # noqa: BLE001 - fall through: treat as damage
                    pass
            nxt = _next_valid_record(buf, pos + 1, last_seq)
            if nxt is None and (torn or not buf[pos:].strip(b"\0")):
                # a prefix of a record (or unfilled space) at the very end: a write in flight
                return ScanResult(records, pos, pos, damaged)
            stop = end if nxt is None else nxt
            damaged.append(DamagedRange(pos, stop - pos, problem, last_seq))
            pos = stop
            data.seek(pos)
            continue
        records.append(decoded)
        last_seq = seq
        pos += decoded.size
    return ScanResult(records, pos, None, damaged)


def damaged_message(source: str, ranges: list[DamagedRange]) -> str:
    """One sentence per damaged range, for ``info``, ``check`` and the front ends."""
    parts = [
        f"{r.size} bytes at byte {r.offset} (after record {r.after_seq}: {r.reason})" for r in ranges
    ]
    return (
        f"{source} holds damaged bytes that no record could be read from: {'; '.join(parts)}. "
        "Every other record is intact and was applied; the damaged bytes stay in the log and a copy "
        "is kept beside it (edits.log.damaged-OFFSET). If the labels look wrong where the damaged "
        "edit was painted, paint that stroke again."
    )


class FileLogBackend:
    """The log as a file on disk, appended with ``O_APPEND`` and optionally fsync'ed."""

    def __init__(self, path: str | os.PathLike, *, fsync: bool = True) -> None:
        self.path = os.fspath(path)
        self.fsync = fsync
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            try:
                try:  # a new log gets the project's mode (the umask's, group rw when shared)
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
                    chmod_new_file(self._fd, os.path.dirname(self.path))
                except FileExistsError:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise StoreIntegrityError(_symlink_message(self.path)) from exc
                raise
        return self._fd

    def append(self, blob: bytes, expected_offset: int) -> int:
        """Append ``blob`` as one ``write`` (+ fsync) at ``expected_offset``, the end of the log as
        scanned; returns that offset. On any failure (a full disk: ENOSPC or a short write; EIO at
        fsync) the file is cut back to where it was, so no partial record stays in front of the
        next one, and :class:`DiskFullError` or :class:`StoreWriteError` says the edit was not saved."""
        fd = self._open()
        offset = os.fstat(fd).st_size
        if offset != expected_offset:
            raise StoreWriteError(
                f"{self.path} is {offset} bytes but the store expected {expected_offset}: it changed "
                "outside the writer lock. Nothing was written; reopen the project (it re-reads the log)."
            )
        try:
            written = os.write(fd, blob)
            if written != len(blob):
                raise OSError(errno.ENOSPC, f"short write: {written} of {len(blob)} bytes")
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:
            rolled_back = True
            try:
                os.ftruncate(fd, offset)
                os.fsync(fd)
            except OSError:
                rolled_back = False  # the partial record is a torn tail: the next open sets it aside
            what = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else f"the write failed ({exc})"
            msg = (
                f"this edit was not saved: {what} writing {self.path}. Everything saved before it is "
                f"intact{'' if rolled_back else ' (the partial record is set aside when the project is next opened)'}. "
                "Free space on that file system (or fix the error), then repeat the edit."
            )
            cls = DiskFullError if exc.errno in (errno.ENOSPC, errno.EDQUOT) else StoreWriteError
            raise cls(msg) from exc
        return offset

    def reader(self) -> BinaryIO:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return io.BytesIO(b"")
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StoreIntegrityError(_symlink_message(self.path)) from exc
            raise
        return os.fdopen(fd, "rb")

    def size(self) -> int:
        try:
            return os.path.getsize(self.path)
        except FileNotFoundError:
            return 0

    def truncate(self, offset: int) -> bytes:
        """Cut the file at ``offset``; returns the bytes removed (for a ``.damaged`` copy)."""
        with os.fdopen(os.open(self.path, os.O_RDWR | os.O_NOFOLLOW), "r+b") as fh:
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

    def append(self, blob: bytes, expected_offset: int) -> int:
        if len(self.buffer) != expected_offset:
            raise StoreWriteError(f"the in-memory log is {len(self.buffer)} bytes, expected {expected_offset}")
        self.buffer += blob
        return expected_offset

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
        self.damaged: list[DamagedRange] = []

    def read_all(self) -> ScanResult:
        with self.backend.reader() as fh:
            result = scan_records(fh, 0, source=self.source)
        self.last_seq = result.records[-1].seq if result.records else 0
        self.end = result.good_end
        self.damaged = list(result.damaged)
        return result

    def read_new(self) -> ScanResult:
        """Records appended (by this or another process) since the last read."""
        if self.backend.size() == self.end:
            return ScanResult([], self.end, None, [])
        with self.backend.reader() as fh:
            result = scan_records(fh, self.end, source=self.source, last_seq=self.last_seq)
        if result.records:
            self.last_seq = result.records[-1].seq
        self.end = result.good_end
        self.damaged.extend(result.damaged)
        return result

    def cut_torn_tail(self, offset: int) -> bytes:
        """Remove a torn tail (a record a dead writer never finished); returns its bytes. Only call
        under the writer lock."""
        tail = self.backend.truncate(offset)
        self.end = min(self.end, offset)
        return tail

    def drop_last(self, record: LogRecord) -> None:
        """Take back the record this process just appended (its labels could not be written).
        Only under the writer lock, before anyone else can have read it."""
        if record.seq != self.last_seq or record.offset + record.size != self.end:
            raise StoreIntegrityError(f"record {record.seq} is not the last record of {self.source}")
        self.backend.truncate(record.offset)
        self.last_seq = record.seq - 1
        self.end = record.offset

    def append(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> LogRecord:
        """Append one record (durable when this returns); returns it with its offset. On failure
        nothing is left in the log and the sequence does not move."""
        seq = self.last_seq + 1
        blob = encode_record(seq, meta, arrays)
        offset = self.backend.append(blob, self.end)
        self.last_seq = seq
        self.end = offset + len(blob)
        return LogRecord(seq=seq, meta=meta, arrays=arrays, offset=offset, size=len(blob))

    def __iter__(self) -> Iterator[LogRecord]:
        return iter(self.read_all().records)
