"""Checks on a zarr array that zarr itself does not make: an array with no stored chunk, and
truncated blosc chunks (numcodecs' blosc decoder does not check the length of what it is given, so a
cut chunk file decodes to wrong values instead of failing).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["BloscChunkCheck", "blosc_chunk_dir", "has_stored_chunks"]

_METADATA = frozenset({".zarray", ".zattrs", ".zgroup", "zarr.json", ".zmetadata"})


def has_stored_chunks(arr: Any) -> bool | None:
    """Whether the store holds at least one chunk of ``arr``; ``None`` when that cannot be listed.

    Stops at the first chunk key, so it is cheap even for an array with millions of chunks.
    """
    try:
        from zarr.core.sync import sync

        store, path = arr.store_path.store, arr.store_path.path
        prefix = f"{path}/" if path else ""

        async def first() -> bool:
            async for key in store.list_prefix(prefix):
                if key.rsplit("/", 1)[-1] not in _METADATA:
                    return True
            return False

        return bool(sync(first()))
    except Exception:  # noqa: BLE001 - a store that cannot list: no check rather than a false alarm
        return None


def blosc_chunk_dir(arr: Any) -> Path | None:
    """The folder of ``arr``'s chunk files when they are blosc frames on a local disk, else ``None``."""
    try:
        from zarr.storage import LocalStore

        store = arr.store_path.store
        if not isinstance(store, LocalStore):
            return None
        md = arr.metadata
        if md.zarr_format == 2:
            comp = md.compressor
            if comp is None or getattr(comp, "codec_id", None) != "blosc":
                return None
        else:
            codecs = list(md.codecs)
            names = [type(c).__name__ for c in codecs]
            if not codecs or names[-1] != "BloscCodec" or "ShardingCodec" in names:
                return None
        return Path(store.root) / arr.store_path.path
    except Exception:  # noqa: BLE001
        return None


class BloscChunkCheck:
    """``arr`` (a zarr array of blosc chunks on disk) whose reads first check that each chunk file read
    is as long as its blosc header says and holds one whole chunk; the rest is ``arr``'s."""

    def __init__(self, arr: Any, chunk_dir: Path, source: str) -> None:
        self.arr = arr
        self.chunk_dir = chunk_dir
        self.source = source
        self.shape = tuple(int(n) for n in arr.shape)
        self.dtype = arr.dtype
        self.chunks = tuple(int(c) for c in arr.chunks)
        self._chunk_bytes = int(np.prod(self.chunks, dtype=np.int64)) * np.dtype(arr.dtype).itemsize

    def __getattr__(self, name: str) -> Any:
        return getattr(self.arr, name)

    def _check(self, coords: tuple[int, ...]) -> None:
        key = self.arr.metadata.encode_chunk_key(coords)
        f = self.chunk_dir / key
        try:
            size = f.stat().st_size
        except FileNotFoundError:
            return  # not stored: zarr gives the fill value, as written
        with open(f, "rb") as fh:
            head = fh.read(16)
        cbytes = int.from_bytes(head[12:16], "little") if len(head) == 16 else -1
        nbytes = int.from_bytes(head[4:8], "little") if len(head) == 16 else -1
        if cbytes != size or nbytes != self._chunk_bytes:
            what = (
                f"{size} bytes, its blosc header says {cbytes} compressed bytes"
                if cbytes != size
                else f"its blosc header says {nbytes} bytes but a chunk is {self._chunk_bytes} bytes"
            )
            raise InputError(
                f"cannot read {self.source}: the chunk file {f} is truncated or corrupted ({what}); "
                "copy the whole .zarr folder again from the original (it was probably cut short by an interrupted transfer)"
            )

    def __getitem__(self, key: Any) -> Any:
        ranges = []
        for k, n, c in zip(key, self.shape, self.chunks):
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if stop <= start:
                    return self.arr[key]
                ranges.append(range(start // c, (stop - 1) // c + 1))
            else:
                ranges.append(range(int(k) // c, int(k) // c + 1))
        for coords in itertools.product(*ranges):  # a stat and a 16-byte read per chunk: cheap next to decoding
            self._check(coords)
        return self.arr[key]
