"""Fast reads of a local zarr v3 array's chunk files, for the store's label planes.

Where the time of a plane read went (a 64 x 2048 x 2048 project, 64^3 chunks, blosc-lz4 labels;
``benchmarks/bench_label_reads.py``): a z plane touches 1024 chunks, and zarr decodes each one into
a freshly allocated 256 KiB buffer. That allocation (an ``mmap`` and 64 page faults per chunk, the
buffer being above glibc's mmap threshold) cost more than the decompression itself: 1024 unlabelled
chunks decoded ~0.6 s fresh, ~0.07 s into one reused buffer; opening and reading the 1024 small
files took ~17 ms. Chunks of unlabelled space are not missing on disk (the labels are written with
``write_empty_chunks``: a missing chunk means damage), they are all the same ~1 KiB encoding of
zeros. So this reader

- reads each chunk file's bytes itself (``os.open``/``os.read``, whole file, fresh on every call:
  nothing is cached but *which encodings decode to all zeros*, a fact of the bytes alone, so a
  chunk rewritten by another process is never read stale);
- skips a chunk whose bytes equal an encoding already seen to decode to all fill values (learnt
  from this process's own decodes: no assumption about the codec library's output);
- decodes the others with the codec zarr itself uses (``numcodecs.blosc.decompress``) into one
  reused buffer, after checking the blosc header's sizes against the chunk's and the file's, and
  keeps the part it took (a z plane of a chunk: 4 KiB) keyed by the chunk's bytes and the part's
  place, so re-reading a labelled plane decodes only the chunks that changed (tier 1 re-reads its
  slice after every stroke); content-addressed, so also never stale, and bounded (32 MiB, LRU);
- hands anything else back to zarr: an unsupported layout or selection (:meth:`ChunkReader.read`
  returns ``None``), and any chunk that cannot be read or decoded exactly as expected (a truncated,
  oversized or garbage file, a permission error). The caller then reads with zarr, which raises or
  answers exactly as before. A missing chunk file reads as the fill value, as zarr reads it.

The same reader serves the model outputs (:func:`al_annotator.store.models.model_outputs`, zarr's
default zstd; a chunk never written is missing there and reads as the fill value, as zarr reads
it), through :class:`ChunkArray`, without the parts cache (each call opens the arrays afresh).

Result: voxel for voxel what ``array[selection]`` returns (tests/test_label_reads.py).
"""

from __future__ import annotations

import collections
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ChunkArray", "ChunkReader", "chunk_reader"]

#: Encodings that decode to all fill values, kept per reader; a few suffice (one per chunk shape and
#: codec version that wrote them), a cap keeps a pathological project from growing the set.
_MAX_ZERO_ENCODINGS = 16
#: An all-fill chunk compresses to about a kilobyte: only encodings this small are tested for it.
_ZERO_TEST_BYTES = 8192
#: Decoded parts kept per reader (a 2048^2 z plane of labelled chunks: ~4 MiB of parts, ~6 MiB of keys).
_CACHE_BYTES = 32 << 20
#: Chunks whose encoding is larger than this (labels that compress badly) are not kept.
_CACHE_MAX_ENCODING = 64 << 10
_BLOSC_MAX_OVERHEAD = 16
_BLOSC_HEADER = 16


class _Fallback(Exception):
    """This chunk (or selection) must be read by zarr."""


def chunk_reader(arr: Any, *, cache_bytes: int | None = None) -> "ChunkReader | None":
    """A :class:`ChunkReader` for ``arr`` when its layout is one it reads exactly, else ``None``:
    a zarr v3 array in a local directory, regular chunks, default chunk keys, no sharding, a
    fixed-size numeric dtype, codecs ``bytes`` (native byte order) then at most one ``blosc`` or
    ``zstd`` (zarr's default, the model outputs'). ``cache_bytes`` bounds its cache of decoded parts
    (default 32 MiB; 0: none)."""
    try:
        import zarr
        from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec
        from zarr.core.chunk_grids import RegularChunkGrid
        from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
    except ImportError:  # another zarr: its own reads only
        return None
    try:
        meta = arr.metadata
        store = arr.store
        if getattr(meta, "zarr_format", None) != 3 or not isinstance(store, zarr.storage.LocalStore):
            return None
        if not isinstance(meta.chunk_grid, RegularChunkGrid) or not isinstance(meta.chunk_key_encoding, DefaultChunkKeyEncoding):
            return None
        codecs = tuple(meta.codecs)
        if not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2:
            return None
        codec = None
        if len(codecs) == 2:
            codec = "blosc" if isinstance(codecs[1], BloscCodec) else "zstd" if isinstance(codecs[1], ZstdCodec) else None
            if codec is None:
                return None
        dtype = np.dtype(arr.dtype)
        if dtype.kind not in "biuf" or dtype.hasobject:
            return None
        if dtype.itemsize > 1 and (codecs[0].endian is None or codecs[0].endian.value != ("little" if np.little_endian else "big")):
            return None
        fill = np.asarray(meta.fill_value, dtype=dtype)
        reader = ChunkReader(Path(store.root) / arr.path, tuple(int(n) for n in arr.shape),
                             tuple(int(c) for c in meta.chunk_grid.chunk_shape), dtype, fill, codec=codec,
                             encode_key=meta.chunk_key_encoding.encode_chunk_key)
        if cache_bytes is not None:
            reader.cache_bytes = int(cache_bytes)
        return reader
    except Exception:  # noqa: BLE001 - any surprise in metadata: zarr reads it
        return None


def _zstd_content_size(data: bytes) -> int | None:
    """The decompressed size a zstd frame's header declares (``None``: not a frame, or none declared).
    numcodecs' ``decompress`` into a larger buffer leaves the rest as it was: the size must be checked."""
    if len(data) < 6 or data[:4] != b"\x28\xb5\x2f\xfd":
        return None
    fhd = data[4]
    if fhd & 0x08:  # reserved bit
        return None
    single = (fhd >> 5) & 1
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    size = (1 if single else 0, 2, 4, 8)[fhd >> 6]
    if not size or len(data) < pos + size:
        return None
    value = int.from_bytes(data[pos : pos + size], "little")
    return value + 256 if size == 2 else value


class ChunkArray:
    """A zarr array whose basic-selection reads go through a :class:`ChunkReader` (what the reader
    hands back goes to the array); every other attribute is the array's own."""

    __slots__ = ("array", "reader")

    def __init__(self, array: Any, reader: "ChunkReader") -> None:
        self.array, self.reader = array, reader

    def __getitem__(self, key: Any) -> Any:
        out = self.reader.read(key)
        return out if out is not None else self.array[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.array, name)

    def __len__(self) -> int:
        return len(self.array)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self[...])
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"ChunkArray({self.array!r})"


class ChunkReader:
    """Reads basic selections (ints, unit-step slices, ``...``) of one array from its chunk files.

    Build with :func:`chunk_reader`. Safe to share between threads (each read has its own buffer;
    the set of all-fill encodings only grows, one ``add`` at a time).
    """

    def __init__(self, directory: Path, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: np.dtype, fill: np.ndarray,
                 *, codec: str | None, encode_key: Any) -> None:
        self.directory = str(directory)
        self.shape, self.chunks, self.dtype = shape, chunks, dtype
        self.fill = fill
        self.codec = codec
        self._encode_key = encode_key
        self._chunk_nbytes = int(np.prod(chunks)) * dtype.itemsize
        self._fill_encodings: set[bytes] = set()
        #: Decoded parts of chunks keyed by the chunk's bytes and the part's place in it (content-addressed:
        #: a chunk rewritten since has other bytes, so a part is never served stale), least recently used
        #: dropped beyond ``cache_bytes``.
        self._parts: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
        self._parts_bytes = 0
        self._lock = threading.Lock()
        self.cache_bytes = _CACHE_BYTES
        #: chunks decoded / skipped as all-fill / served from the parts cache / read as missing (benchmarks, tests)
        self.decoded = self.skipped = self.cached = self.missing = 0

    def _ranges(self, sel: Any) -> tuple[list[tuple[int, int]], list[bool]] | None:
        """Per axis ``(start, stop)`` and whether the axis is dropped (an int); ``None`` if unsupported."""
        if not isinstance(sel, tuple):
            sel = (sel,)
        if any(s is Ellipsis for s in sel):
            if sum(s is Ellipsis for s in sel) > 1:
                return None
            i = next(n for n, s in enumerate(sel) if s is Ellipsis)
            sel = sel[:i] + (slice(None),) * (len(self.shape) - len(sel) + 1) + sel[i + 1:]
        if len(sel) > len(self.shape):
            return None
        sel = sel + (slice(None),) * (len(self.shape) - len(sel))
        ranges, dropped = [], []
        for s, n in zip(sel, self.shape):
            if isinstance(s, (bool, np.bool_)):
                return None
            if isinstance(s, (int, np.integer)):
                i = int(s) + n if s < 0 else int(s)
                if not 0 <= i < n:
                    return None  # zarr raises its own IndexError
                ranges.append((i, i + 1))
                dropped.append(True)
            elif isinstance(s, slice):
                start, stop, step = s.indices(n)
                if step != 1:
                    return None
                ranges.append((start, max(start, stop)))
                dropped.append(False)
            else:
                return None
        return ranges, dropped

    def read(self, sel: Any) -> np.ndarray | None:
        """``array[sel]`` as a new array, or ``None``: read it with zarr instead (an unsupported
        selection, or a chunk that is not exactly what this reader expects)."""
        parsed = self._ranges(sel)
        if parsed is None:
            return None
        ranges, dropped = parsed
        if all(dropped):
            return None  # one voxel: zarr's own answer (and type)
        out = np.empty(tuple(b - a for a, b in ranges), self.dtype)
        out[...] = self.fill
        if out.size:
            try:
                self._fill(out, ranges)
            except _Fallback:
                return None
        return out.reshape(tuple(n for n, d in zip(out.shape, dropped) if not d))

    def _fill(self, out: np.ndarray, ranges: list[tuple[int, int]]) -> None:
        import itertools

        grids = [range(a // c, (b - 1) // c + 1) for (a, b), c in zip(ranges, self.chunks)]
        buf = None
        for coords in itertools.product(*grids):
            src, dst = [], []
            for c, (a, b), size in zip(coords, ranges, self.chunks):
                lo, hi = max(a, c * size), min(b, (c + 1) * size)
                src.append(slice(lo - c * size, hi - c * size))
                dst.append(slice(lo - a, hi - a))
            data = self._raw(coords)
            if data is None:
                self.missing += 1
                continue  # zarr reads a missing chunk as the fill value
            if len(data) <= _ZERO_TEST_BYTES and data in self._fill_encodings:
                self.skipped += 1
                continue
            keep = self.cache_bytes > 0 and len(data) <= _CACHE_MAX_ENCODING
            key = (data, tuple((s.start, s.stop) for s in src)) if keep else None
            part = self._cached(key) if key is not None else None
            if part is None:
                if buf is None:
                    buf = np.empty(self.chunks, self.dtype)
                chunk = self._decode(data, buf)
                if chunk is None:
                    continue
                part = chunk[tuple(src)]
                if key is not None:
                    part = part.copy()
                    self._keep(key, part)
            else:
                self.cached += 1
            out[tuple(dst)] = part

    def _cached(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            part = self._parts.get(key)
            if part is not None:
                self._parts.move_to_end(key)
            return part

    def _keep(self, key: tuple, part: np.ndarray) -> None:
        size = len(key[0]) + part.nbytes + 256
        with self._lock:
            if key in self._parts:
                return
            self._parts[key] = part
            self._parts_bytes += size
            while self._parts_bytes > self.cache_bytes and self._parts:
                old_key, old = self._parts.popitem(last=False)
                self._parts_bytes -= len(old_key[0]) + old.nbytes + 256

    def _raw(self, coords: tuple[int, ...]) -> bytes | None:
        """The bytes of a chunk's file (read whole, now), ``None`` when there is no such file."""
        path = f"{self.directory}/{self._encode_key(coords)}"
        n = self._chunk_nbytes
        limit = n + {None: 0, "blosc": _BLOSC_MAX_OVERHEAD, "zstd": (n >> 7) + 1024}[self.codec]
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _Fallback from exc
        try:
            parts, total = [], 0
            while total <= limit:
                part = os.read(fd, limit + 1 - total)
                if not part:
                    break
                parts.append(part)
                total += len(part)
        except OSError as exc:
            raise _Fallback from exc
        finally:
            os.close(fd)
        if total > limit:
            raise _Fallback  # larger than any encoding of this chunk: zarr says what it makes of it
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _decode(self, data: bytes, buf: np.ndarray) -> np.ndarray | None:
        """The decoded chunk (in ``buf``, or a view of ``data``), ``None`` when it holds only the fill value."""
        if self.codec is None:
            if len(data) != self._chunk_nbytes:
                raise _Fallback
            return np.frombuffer(data, self.dtype).reshape(self.chunks)
        try:
            if self.codec == "blosc":
                from numcodecs import blosc

                if len(data) < _BLOSC_HEADER:
                    raise _Fallback
                nbytes, cbytes, _ = blosc._cbuffer_sizes(data)
                if nbytes != self._chunk_nbytes or cbytes != len(data):
                    raise _Fallback
                blosc.decompress(data, buf)
            else:
                from numcodecs import zstd

                if _zstd_content_size(data) != self._chunk_nbytes:
                    raise _Fallback
                zstd.decompress(data, buf)
        except _Fallback:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the codec raises: zarr raises it again, as before
            raise _Fallback from exc
        self.decoded += 1
        if len(data) <= _ZERO_TEST_BYTES and len(self._fill_encodings) < _MAX_ZERO_ENCODINGS and self._all_fill(buf):
            self._fill_encodings.add(data)
            return None
        return buf

    def _all_fill(self, buf: np.ndarray) -> bool:
        """Every byte of ``buf`` is the fill value's (bytes, not values: -0.0 is not 0.0)."""
        raw = buf.reshape(-1).view(np.uint8)
        if not self.fill.tobytes().strip(b"\0"):
            return not raw.any()
        return raw.tobytes() == self.fill.tobytes() * buf.size
