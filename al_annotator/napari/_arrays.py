"""Array wrappers napari layers read from: the project's labels (with a stroke buffer) and lazy maps.

:class:`StoreLabels` is the data of the napari Labels layer. It reads from the project's zarr
labels array, so opening a 1024^3 project reads nothing up front and a numpy copy of the labels
(1 GiB at 1024^3) is never made. napari writes each brush dab into it (``data[bbox] = region``);
those writes go to a small in-memory *stroke buffer* of 64^3 chunks, never to the zarr array:
the store is written only by :meth:`al_annotator.core.Session.apply_edit`, which logs the edit and
holds the writer lock. When napari closes the stroke (``events.paint``) the bridge sends the
stroke to the session and the buffer is dropped, so reads come from the store again.

No Qt or napari import here: the wrappers are plain array-likes (shape, dtype, ndim,
``__getitem__``, ``__setitem__``, ``__array__``).

Plane cache: napari asks a layer for one whole plane at a time (``data[(i, :, :)]``, or
``data[(:, i:i+1, :)]`` for images) on the GUI thread. Each wrapper keeps the last few planes
(:class:`PlaneCache`, bounded in bytes) so that the dock can read the planes it is about to show
on its background thread (:meth:`MappedArray.prefetch`, :meth:`StoreLabels.prefetch`) and napari's
slicing on the GUI thread then finds them in memory instead of reading zarr chunks there. A
cached plane carries a *token* (the store's edit-log position for labels, a constant for the
image and a model version's outputs, which never change); an entry whose token is not the
current one is never returned.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["StoreLabels", "MappedArray", "ServedPlanes", "ZerosArray", "PlaneCache", "ImageLevel", "LevelShown",
           "image_levels", "plane_of", "read_only"]


class _ArrayLike:
    """What napari asks of a lazy array beyond ``shape``, ``dtype`` and ``__getitem__`` (which subclasses define)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = np.asarray(self[...])
        return out if dtype is None else out.astype(dtype, copy=False)


def plane_of(key: Any, shape: Sequence[int]) -> tuple[int, int, bool] | None:
    """``(axis, index, keepdims)`` when ``key`` asks for one whole plane of an array of ``shape``, else ``None``.

    napari's 2D slicing asks for ``(i, :, :)`` (labels) or ``(i:i+1, :, :)`` (images, ``keepdims``).

    Examples
    --------
    >>> plane_of((slice(None), 4, slice(None)), (8, 8, 8)), plane_of((slice(2, 3), slice(None), slice(0, 8)), (8, 8, 8))
    ((1, 4, False), (0, 2, True))
    >>> plane_of((1, 2, slice(None)), (8, 8, 8)) is None, plane_of((slice(0, 4), slice(None), slice(None)), (8, 8, 8)) is None
    (True, True)
    """
    if not isinstance(key, tuple) or len(key) != len(shape) or len(shape) < 2:
        return None
    found: tuple[int, int, bool] | None = None
    for axis, (k, n) in enumerate(zip(key, shape)):
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if (start, stop, step) == (0, n, 1):
                continue
            if step != 1 or stop - start != 1 or found is not None:
                return None
            found = (axis, start, True)
        elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
            if found is not None or not -n <= int(k) < n:
                return None
            found = (axis, int(k) % n, False)
        else:
            return None
    return found


def _plane_key(axis: int, index: int, ndim: int) -> tuple:
    key: list[Any] = [slice(None)] * ndim
    key[axis] = index
    return tuple(key)


class PlaneCache:
    """The last few whole planes of one array, each with the token it was read at (thread-safe).

    Bounded by ``max_bytes`` and ``max_planes`` (least recently used dropped first). ``get``
    returns a copy (napari patches the labels plane it holds in place while painting).

    Examples
    --------
    >>> c = PlaneCache(max_planes=2)
    >>> c.put(0, 3, "t1", np.zeros((2, 2)))
    >>> c.get(0, 3, "t1").shape, c.get(0, 3, "t2"), c.get(1, 3, "t1")
    ((2, 2), None, None)
    """

    def __init__(self, max_bytes: int = 64 << 20, max_planes: int = 12) -> None:
        self.max_bytes = int(max_bytes)
        self.max_planes = int(max_planes)
        self.lock = threading.RLock()
        self._planes: OrderedDict[tuple[int, int], tuple[Any, np.ndarray]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._planes)

    def has(self, axis: int, index: int, token: Any) -> bool:
        with self.lock:
            entry = self._planes.get((axis, index))
            return entry is not None and entry[0] == token

    def get(self, axis: int, index: int, token: Any) -> np.ndarray | None:
        with self.lock:
            entry = self._planes.get((axis, index))
            if entry is None or entry[0] != token:
                self.misses += 1
                return None
            self._planes.move_to_end((axis, index))
            self.hits += 1
            return entry[1].copy()

    def put(self, axis: int, index: int, token: Any, plane: np.ndarray) -> None:
        if plane.nbytes > self.max_bytes:
            return
        with self.lock:
            self._planes[(axis, index)] = (token, plane)
            self._planes.move_to_end((axis, index))
            total = sum(p.nbytes for _, p in self._planes.values())
            while self._planes and (len(self._planes) > self.max_planes or total > self.max_bytes):
                _, (_, dropped) = self._planes.popitem(last=False)
                total -= dropped.nbytes

    def entries(self) -> list[tuple[int, int, Any, np.ndarray]]:
        """``(axis, index, token, plane)`` of every entry (call with :attr:`lock` held to modify planes)."""
        with self.lock:
            return [(a, i, t, p) for (a, i), (t, p) in self._planes.items()]

    def retag(self, axis: int, index: int, token: Any) -> None:
        with self.lock:
            entry = self._planes.get((axis, index))
            if entry is not None:
                self._planes[(axis, index)] = (token, entry[1])

    def clear(self) -> None:
        with self.lock:
            self._planes.clear()


def _is_index_array(k: Any) -> bool:
    return isinstance(k, (np.ndarray, list)) and not isinstance(k, (bool, np.bool_))


def _local_slice(start: int, stop: int, step: int, lo: int) -> slice:
    """``slice(start, stop, step)`` of a whole axis, re-expressed relative to ``lo`` (the bbox start)."""
    r = range(start, stop, step)
    first = r[0] - lo
    end = r[-1] - lo + step
    return slice(first, None if end < 0 else end, step)


class StoreLabels(_ArrayLike):
    """The labels of a project as a napari layer sees them.

    Parameters
    ----------
    labels
        The project's saved labels (``Session.labels_array``, lazy and read-only): read, never written here.
    on_write
        Called with no argument after every write into the stroke buffer (the bridge decides
        whether the write belongs to an open stroke or must be sent to the session now).
    token
        Returns the labels' current edit-log position (``Session.labels_seq``). Given: whole
        planes are cached (:class:`PlaneCache`) and a cached plane is used only while the token
        it was read (or last updated) at is the current one. The cache holds the store's labels,
        never the stroke buffer (overlaid on every read), so a refused stroke never sticks; the
        bridge writes each committed stroke into the cached planes (:meth:`apply_atoms`). Not
        given: no cache, every read goes to the store.

    Examples
    --------
    >>> import numpy as np
    >>> base = np.zeros((4, 8, 8), np.uint8)
    >>> lab = StoreLabels(base, chunks=(2, 4, 4))
    >>> lab[1, 0:2, 0:2] = 3
    >>> int(lab[1, 1, 1]), int(base[1, 1, 1]), lab.pending
    (3, 0, 1)
    >>> coords, values = lab.take_differences()
    >>> coords.shape, values.tolist()
    ((3, 4), [3, 3, 3, 3])
    """

    def __init__(self, labels: Any, *, chunks: Sequence[int] | None = None, on_write: Callable[[], None] | None = None,
                 token: Callable[[], Any] | None = None) -> None:
        self.base = labels
        self._shape = tuple(int(s) for s in labels.shape)
        self._dtype = np.dtype(labels.dtype)
        ch = chunks or getattr(labels, "chunks", None) or self._shape
        self._chunks = tuple(max(1, min(int(c), s)) for c, s in zip(ch, self._shape))
        self._dirty: dict[tuple[int, ...], np.ndarray] = {}
        self.on_write = on_write
        self.token = token
        self.plane_cache: PlaneCache | None = PlaneCache() if token is not None else None

    # ------------------------------------------------------------------ array protocol
    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def nbytes(self) -> int:
        return self.size * self._dtype.itemsize

    @property
    def chunks(self) -> tuple[int, ...]:
        return self._chunks

    def __repr__(self) -> str:
        return f"<StoreLabels shape={self._shape} dtype={self._dtype} buffered_chunks={len(self._dirty)}>"

    @property
    def pending(self) -> int:
        """How many 64^3 chunks the stroke buffer holds (0 when everything is in the store)."""
        return len(self._dirty)

    # ------------------------------------------------------------------ indexing
    def _plan(self, key: Any) -> tuple[tuple[slice, ...], Any]:
        """Split an index into the bounding box to read (step-1 slices) and the index within it."""
        if not isinstance(key, tuple):
            key = (key,)
        if any(_is_index_array(k) for k in key):
            return self._plan_fancy(key)
        if sum(k is Ellipsis for k in key) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        if Ellipsis in key:
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for labels of shape {self._shape}: {key!r}")
        key = key + (slice(None),) * (self.ndim - len(key))
        bbox: list[slice] = []
        local: list[Any] = []
        for k, n in zip(key, self._shape):
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                r = range(start, stop, step)
                if len(r) == 0:
                    bbox.append(slice(0, 0))
                    local.append(slice(0, 0))
                    continue
                lo, hi = min(r[0], r[-1]), max(r[0], r[-1]) + 1
                bbox.append(slice(lo, hi))
                local.append(slice(None) if step == 1 else _local_slice(start, stop, step, lo))
            elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
                i = int(k)
                if not -n <= i < n:
                    raise IndexError(f"index {i} is out of bounds for an axis of length {n}")
                i = i + n if i < 0 else i
                bbox.append(slice(i, i + 1))
                local.append(0)
            else:
                raise TypeError(f"labels support integers, slices, '...' and integer arrays as indices, got {type(k).__name__}")
        return tuple(bbox), tuple(local)

    def _plan_fancy(self, key: tuple) -> tuple[tuple[slice, ...], Any]:
        if len(key) != self.ndim or any(isinstance(k, slice) or k is Ellipsis for k in key):
            raise TypeError("integer-array indexing of labels needs one integer array (or integer) per axis, as napari's data_setitem does")
        arrays = np.broadcast_arrays(*[np.asarray(k, dtype=np.int64) for k in key])
        bbox: list[slice] = []
        local: list[np.ndarray] = []
        for a, n in zip(arrays, self._shape):
            a = np.where(a < 0, a + n, a)
            if a.size and (a.min() < 0 or a.max() >= n):
                raise IndexError(f"index out of bounds for an axis of length {n}")
            lo = int(a.min()) if a.size else 0
            hi = int(a.max()) + 1 if a.size else 0
            bbox.append(slice(lo, hi))
            local.append(a - lo)
        return tuple(bbox), tuple(local)

    def _chunk_ranges(self, bbox: tuple[slice, ...]) -> list[range]:
        return [range(s.start // c, (s.stop - 1) // c + 1) if s.stop > s.start else range(0) for s, c in zip(bbox, self._chunks)]

    def _chunk_box(self, cidx: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(cidx, self._chunks, self._shape))

    def _intersections(self, bbox: tuple[slice, ...]):
        """(chunk index, part of the bbox, part of the chunk) for every chunk the bbox touches."""
        for cidx in itertools.product(*self._chunk_ranges(bbox)):
            cbox = self._chunk_box(cidx)
            inter = [slice(max(b.start, c.start), min(b.stop, c.stop)) for b, c in zip(bbox, cbox)]
            yield (cidx, tuple(slice(i.start - b.start, i.stop - b.start) for i, b in zip(inter, bbox)),
                   tuple(slice(i.start - c.start, i.stop - c.start) for i, c in zip(inter, cbox)))

    def _read_box(self, bbox: tuple[slice, ...]) -> np.ndarray:
        """The labels in a bounding box: the store, with the stroke buffer on top.

        When the stroke buffer holds every chunk of the box (a brush dab inside a stroke) the box
        is assembled from memory: a zarr read costs ~2 ms even for a few voxels.
        """
        parts = list(self._intersections(bbox)) if self._dirty else []
        if parts and all(cidx in self._dirty for cidx, _, _ in parts):
            out = np.empty(tuple(s.stop - s.start for s in bbox), self._dtype)
        else:
            out = np.array(self.base[bbox], dtype=self._dtype, copy=True)
        for cidx, in_box, in_chunk in parts:
            block = self._dirty.get(cidx)
            if block is not None:
                out[in_box] = block[in_chunk]
        return out

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)) and self.ndim > 1:
            # napari's Labels.paint checks the dtype with ``data[0].dtype`` on every brush dab; reading
            # a whole z plane for that (256 chunks at 1024^3) would stall each dab. Return a lazy plane.
            n = self._shape[0]
            if not -n <= int(key) < n:
                raise IndexError(f"index {int(key)} is out of bounds for an axis of length {n}")
            return _LazyPlane(self, int(key) % n)
        if self.plane_cache is not None:
            plane = plane_of(key, self._shape)
            if plane is not None:
                return self._cached_plane(*plane)
        bbox, local = self._plan(key)
        if not self._dirty and not any(_is_index_array(k) for k in local):
            # Nothing buffered: let zarr read exactly what was asked (the common, fast path).
            out = self.base[key if isinstance(key, tuple) else (key,)]
            # A numpy base returns a view: copy it, or napari's cache patching would write the store.
            return np.array(out, copy=True) if isinstance(self.base, np.ndarray) else np.asarray(out)
        return self._read_box(bbox)[local]

    def __setitem__(self, key: Any, value: Any) -> None:
        bbox, local = self._plan(key)
        if any(s.stop <= s.start for s in bbox):
            return
        parts = list(self._intersections(bbox))
        for cidx, _, _ in parts:  # bring the touched chunks into the stroke buffer (one zarr read each)
            if cidx not in self._dirty:
                self._dirty[cidx] = np.array(self.base[self._chunk_box(cidx)], dtype=self._dtype, copy=True)
        region = self._read_box(bbox)
        region[local] = value
        for cidx, in_box, in_chunk in parts:
            self._dirty[cidx][in_chunk] = region[in_box]
        if self.on_write is not None:
            self.on_write()

    # ------------------------------------------------------------------ plane cache
    def _read_plane(self, axis: int, index: int) -> np.ndarray:
        return np.array(self.base[_plane_key(axis, index, self.ndim)], dtype=self._dtype, copy=True)

    def _cached_plane(self, axis: int, index: int, keepdims: bool) -> np.ndarray:
        """A whole plane: from the cache when it is current (else read and cached), stroke buffer on top."""
        cache = self.plane_cache
        token = self.token()
        plane = cache.get(axis, index, token)
        if plane is None:
            plane = self._read_plane(axis, index)
            cache.put(axis, index, token, plane.copy())  # the token read before the store: never newer than the data
        for cidx, block in self._dirty.items():
            cbox = self._chunk_box(cidx)
            if cbox[axis].start <= index < cbox[axis].stop:
                inner = tuple(slice(None) if d != axis else index - cbox[axis].start for d in range(self.ndim))
                plane[tuple(c for d, c in enumerate(cbox) if d != axis)] = block[inner]
        return np.expand_dims(plane, axis) if keepdims else plane

    def prefetch(self, axis: int, index: int) -> bool:
        """Read plane ``index`` of ``axis`` into the cache unless it is there (any thread; reads the
        store only, never the stroke buffer). Returns whether the store was read."""
        if self.plane_cache is None:
            return False
        token = self.token()
        if self.plane_cache.has(axis, index, token):
            return False
        self.plane_cache.put(axis, index, token, self._read_plane(axis, index))
        return True

    def apply_atoms(self, atoms: Sequence[Any], before: Any, after: Any) -> None:
        """Bring cached planes read at token ``before`` to ``after`` by writing ``atoms`` (the edits
        applied in between, in order) into them; planes at other tokens stay stale (read again)."""
        cache = self.plane_cache
        if cache is None:
            return
        with cache.lock:
            entries = [e for e in cache.entries() if e[2] == before]
            for axis, index, _, plane in entries:
                for atom in atoms:
                    _write_atom(plane, axis, index, atom, self._shape)
                cache.retag(axis, index, after)

    def invalidate(self) -> None:
        """Forget every cached plane (the next read of each goes to the store)."""
        if self.plane_cache is not None:
            self.plane_cache.clear()

    # ------------------------------------------------------------------ stroke buffer
    def take_differences(self) -> tuple[np.ndarray, np.ndarray]:
        """Empty the stroke buffer; return the voxels where it differed from the store.

        Returns ``(coords, values)``: ``coords`` is ``(ndim, N)`` int64, ``values`` ``(N,)``.
        """
        coords: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for cidx, block in self._dirty.items():
            cbox = self._chunk_box(cidx)
            base = np.asarray(self.base[cbox])
            diff = block != base
            if diff.any():
                nz = np.nonzero(diff)
                coords.append(np.stack([n + c.start for n, c in zip(nz, cbox)]))
                values.append(block[nz])
        self._dirty.clear()
        if not coords:
            return np.zeros((self.ndim, 0), np.int64), np.zeros(0, self._dtype)
        return np.concatenate(coords, axis=1).astype(np.int64), np.concatenate(values)

    def discard(self) -> None:
        """Drop the stroke buffer (its content is in the store, or must not get there)."""
        self._dirty.clear()


def _write_atom(plane: np.ndarray, axis: int, index: int, atom: Any, shape: Sequence[int]) -> None:
    """Write an :class:`~al_annotator.types.EditAtom`'s new values into plane ``index`` of ``axis``."""
    ref = atom.slice_ref
    a = ref.axis_number
    idx = np.asarray(atom.indices, np.int64).reshape(-1)
    new = np.asarray(atom.new_values).reshape(-1)
    if idx.size == 0:
        return
    if new.size == 1 and idx.size != 1:
        new = np.broadcast_to(new, idx.shape)
    if a == axis:
        if ref.index == index:
            plane.reshape(-1)[idx] = new
        return
    others = [d for d in range(len(shape)) if d != a]
    rows, cols = np.unravel_index(idx, tuple(shape[d] for d in others))
    coords = {a: np.full(idx.shape, ref.index), others[0]: rows, others[1]: cols}
    sel = coords[axis] == index
    if sel.any():
        rest = [d for d in range(len(shape)) if d != axis]
        plane[coords[rest[0]][sel], coords[rest[1]][sel]] = new[sel]


class _LazyPlane(_ArrayLike):
    """``data[i]`` of a :class:`StoreLabels` or :class:`MappedArray`, read only when its values are asked for."""

    def __init__(self, parent: Any, index: int) -> None:
        self.parent = parent
        self.index = index

    @property
    def shape(self) -> tuple[int, ...]:
        return self.parent.shape[1:]

    @property
    def dtype(self) -> np.dtype:
        return self.parent.dtype

    def __getitem__(self, key: Any) -> Any:
        return self.parent[(self.index, *(key if isinstance(key, tuple) else (key,)))]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.parent[(self.index, *(key if isinstance(key, tuple) else (key,)))] = value

    def __repr__(self) -> str:
        return f"<plane {self.index} of {self.parent!r}>"


class MappedArray(_ArrayLike):
    """A lazy elementwise map of an array-like: ``MappedArray(conf, lambda c: 1 - c / 255, np.float32)``.

    Examples
    --------
    >>> import numpy as np
    >>> m = MappedArray(np.full((2, 3, 3), 255, np.uint8), lambda c: 1 - c / np.float32(255), np.float32)
    >>> m.shape, float(m[0, 1, 1])
    ((2, 3, 3), 0.0)
    """

    def __init__(self, base: Any, func: Callable[[np.ndarray], np.ndarray], dtype: Any, *, cache: bool = True) -> None:
        self.base = base
        self.func = func
        self._dtype = np.dtype(dtype)
        #: Whole planes read so far (the base never changes: a store's image, a model version's outputs).
        self.plane_cache: PlaneCache | None = PlaneCache() if cache else None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.base.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)) and self.ndim > 1:
            # napari's Labels layer asks ``data[0]`` when data is set (a dtype check): no plane read for that
            n = self.shape[0]
            if not -n <= int(key) < n:
                raise IndexError(f"index {int(key)} is out of bounds for an axis of length {n}")
            return _LazyPlane(self, int(key) % n)
        if self.plane_cache is not None:
            found = plane_of(key, self.shape)
            if found is not None:
                axis, index, keepdims = found
                plane = self.plane_cache.get(axis, index, 0)
                if plane is None:
                    plane = self._read_plane(axis, index)
                    self.plane_cache.put(axis, index, 0, plane.copy())
                return np.expand_dims(plane, axis) if keepdims else plane
        return np.asarray(self.func(np.asarray(self.base[key])), dtype=self._dtype)

    def _read_plane(self, axis: int, index: int) -> np.ndarray:
        return np.array(self.func(np.asarray(self.base[_plane_key(axis, index, self.ndim)])), dtype=self._dtype, copy=True)

    def prefetch(self, axis: int, index: int) -> bool:
        """Read plane ``index`` of ``axis`` into the cache unless it is there (any thread).
        Returns whether the base was read."""
        if self.plane_cache is None or self.plane_cache.has(axis, index, 0):
            return False
        self.plane_cache.put(axis, index, 0, self._read_plane(axis, index))
        return True


class ServedPlanes(_ArrayLike):
    """A layer's data whose every plane shows what serves that plane now (the prediction and
    uncertainty layers: tier 1's preview of the plane, else the deep model version, else zeros).

    Parameters
    ----------
    shape, dtype
        Of the volume.
    source
        ``source(axis, index) -> (token, read)``: what plane ``index`` of ``axis`` shows now, as a
        cache key compared with ``==`` (cheap, in-memory, any thread), and ``read()`` returning that
        plane (2D) or ``None`` (zeros). A cached plane is returned only while its token is the one
        ``source`` gives now, so a plane is never shown from a tier that no longer serves it.
    volume
        ``volume() -> array-like or None``: what reads other than one whole plane (napari's 3D view)
        come from; ``None``: zeros.

    :meth:`prefetch` (the dock's worker thread) reads the displayed plane into the cache before the
    layer is refreshed, so napari's slicing on the GUI thread finds it in memory.

    Examples
    --------
    >>> import numpy as np
    >>> shown = {"token": 1, "plane": np.ones((3, 4), np.uint8)}
    >>> a = ServedPlanes((2, 3, 4), np.uint8, lambda axis, i: (shown["token"], lambda: shown["plane"]))
    >>> int(a[0, :, :].sum()), a.prefetch(0, 1), a.prefetch(0, 1)
    (12, True, False)
    >>> shown.update(token=2, plane=None)
    >>> int(a[0, :, :].sum()), a[(slice(None), 1, slice(None))].shape
    (0, (2, 4))
    """

    def __init__(self, shape: Sequence[int], dtype: Any, source: Callable[[int, int], tuple[Any, Callable[[], Any]]],
                 volume: Callable[[], Any] | None = None) -> None:
        self._shape = tuple(int(s) for s in shape)
        self._dtype = np.dtype(dtype)
        self.source = source
        self.volume = volume or (lambda: None)
        self.plane_cache = PlaneCache()

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def __repr__(self) -> str:
        return f"<ServedPlanes shape={self._shape} dtype={self._dtype} cached={len(self.plane_cache)}>"

    def _plane_shape(self, axis: int) -> tuple[int, ...]:
        return tuple(n for d, n in enumerate(self._shape) if d != axis)

    def _read(self, axis: int, index: int, read: Callable[[], Any]) -> np.ndarray:
        plane = read()
        if plane is None:
            return np.zeros(self._plane_shape(axis), self._dtype)
        plane = np.array(plane, dtype=self._dtype, copy=True)
        if plane.shape != self._plane_shape(axis):
            raise ValueError(f"a plane of axis {axis} must have shape {self._plane_shape(axis)}, got {plane.shape}")
        return plane

    def plane(self, axis: int, index: int) -> np.ndarray:
        """Plane ``index`` of ``axis`` as served now (from the cache when current, else read and cached)."""
        token, read = self.source(axis, index)
        plane = self.plane_cache.get(axis, index, token)
        if plane is None:
            plane = self._read(axis, index, read)
            self.plane_cache.put(axis, index, token, plane.copy())
        return plane

    def prefetch(self, axis: int, index: int) -> bool:
        """Read the plane as served now into the cache unless it is there (any thread). Returns
        whether it was read."""
        token, read = self.source(axis, index)
        if self.plane_cache.has(axis, index, token):
            return False
        self.plane_cache.put(axis, index, token, self._read(axis, index, read))
        return True

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)) and self.ndim > 1:
            n = self._shape[0]  # napari's Labels asks ``data[0]`` for its dtype: no plane read for that
            if not -n <= int(key) < n:
                raise IndexError(f"index {int(key)} is out of bounds for an axis of length {n}")
            return _LazyPlane(self, int(key) % n)
        found = plane_of(key, self._shape)
        if found is not None:
            axis, index, keepdims = found
            plane = self.plane(axis, index)
            return np.expand_dims(plane, axis) if keepdims else plane
        volume = self.volume()
        if volume is None:
            return np.zeros(np.broadcast_to(np.zeros((), self._dtype), self._shape)[key].shape, self._dtype)
        return np.asarray(volume[key], dtype=self._dtype)


class ZerosArray(_ArrayLike):
    """A lazy all-zero volume: the placeholder of the model layers before the first model version.

    Examples
    --------
    >>> ZerosArray((4, 5, 6), "uint8")[1, :2].tolist()
    [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]
    """

    def __init__(self, shape: Sequence[int], dtype: Any) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.zeros(np.broadcast_to(np.zeros((), self.dtype), self.shape)[key].shape, self.dtype)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.zeros(self.shape, dtype or self.dtype)


class ImageLevel(_ArrayLike):
    """One level of the multiscale image layer (the image, or a pyramid level): lazy, read-only.

    napari slices a multiscale level in two steps: ``level[:, r0:r1, c0:c1]`` (the field of view
    on the displayed axes, every voxel of the others), then ``np.asarray(part[i, :, :])``. It
    expects the first step to be lazy (a dask or zarr view); here any key of plain slices gives a
    lazy window on the level (:class:`ImageLevel` with an offset), and only a key with an
    integer, or ``np.asarray``, reads. A read within one plane is cut from that plane when it is
    in the plane cache (:meth:`prefetch` on the dock's worker thread fills it), else reads just
    the asked-for part (a whole plane is then cached).

    Examples
    --------
    >>> import numpy as np
    >>> level = ImageLevel(np.arange(4 * 6 * 8).reshape(4, 6, 8))
    >>> view = level[:, 2:5, 1:3]
    >>> type(view).__name__, view.shape, int(view[1, 0, 0]) == 1 * 48 + 2 * 8 + 1
    ('ImageLevel', (4, 3, 2), True)
    >>> level.prefetch(0, 1), np.asarray(view[1]).tolist() == np.arange(192).reshape(4, 6, 8)[1, 2:5, 1:3].tolist()
    (True, True)
    """

    def __init__(self, base: Any, offset: Sequence[int] | None = None, shape: Sequence[int] | None = None, *,
                 cache: PlaneCache | None = None) -> None:
        self.base = base
        full = tuple(int(n) for n in base.shape)
        self._offset = tuple(int(o) for o in offset) if offset is not None else (0,) * len(full)
        self._shape = tuple(int(n) for n in shape) if shape is not None else full
        self._dtype = np.dtype(base.dtype)
        self.plane_cache = cache if cache is not None else PlaneCache()

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def __repr__(self) -> str:
        return f"<ImageLevel shape={self._shape} offset={self._offset} of {tuple(self.base.shape)}>"

    def _base_key(self, key: Any) -> tuple[list[Any], bool]:
        """``key`` (ints and step-1 slices) on this window -> the key on the base; whether it is lazy (no int)."""
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1:]
        key = key + (slice(None),) * (self.ndim - len(key))
        if len(key) != self.ndim:
            raise IndexError(f"too many indices for an image level of {self.ndim} dimensions")
        out: list[Any] = []
        lazy = True
        for k, n, o in zip(key, self._shape, self._offset):
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step != 1:
                    raise IndexError("an image level is sliced with step 1 only")
                out.append(slice(o + start, o + max(start, stop)))
            elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
                if not -n <= int(k) < n:
                    raise IndexError(f"index {int(k)} is out of bounds for an axis of length {n}")
                out.append(o + int(k) % n)
                lazy = False
            else:
                raise IndexError(f"an image level takes integers and slices, got {type(k).__name__}")
        return out, lazy

    def __getitem__(self, key: Any) -> Any:
        base_key, lazy = self._base_key(key)
        if lazy:
            return ImageLevel(self.base, [k.start for k in base_key], [k.stop - k.start for k in base_key], cache=self.plane_cache)
        return self._read(base_key)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self._read([slice(o, o + n) for o, n in zip(self._offset, self._shape)])
        return out if dtype is None else out.astype(dtype, copy=False)

    def _read(self, base_key: list[Any]) -> np.ndarray:
        # within one plane: napari asks ``[i, r0:r1, c0:c1]``, or ``[i:i+1, ...]`` when it slices thick
        # (a projection over a 1-voxel margin); such a read is cut from the cached plane, and a read of a
        # whole plane caches it
        ints = [d for d, k in enumerate(base_key) if not isinstance(k, slice)]
        thin = [d for d, k in enumerate(base_key) if isinstance(k, slice) and k.stop - k.start == 1]
        for axis in ints if ints else thin:
            if len(ints) > 1:
                break
            keep = not ints
            index = base_key[axis].start if keep else base_key[axis]
            rest = tuple(k for d, k in enumerate(base_key) if d != axis)
            plane = self.plane_cache.get(axis, index, 0)
            if plane is None and len(ints or thin) == 1 and all(
                    k.start == 0 and k.stop == n for k, n in zip(rest, (n for d, n in enumerate(self.base.shape) if d != axis))):
                plane = self._read_plane(axis, index)
                self.plane_cache.put(axis, index, 0, plane.copy())
            if plane is not None:
                part = plane[rest]
                return np.expand_dims(part, axis) if keep else part
        return np.array(self.base[tuple(base_key)], dtype=self._dtype, copy=True)

    def _read_plane(self, axis: int, index: int) -> np.ndarray:
        return np.array(self.base[_plane_key(axis, index, len(self.base.shape))], dtype=self._dtype, copy=True)

    def prefetch(self, axis: int, index: int) -> bool:
        """Read plane ``index`` of ``axis`` of this level into the cache unless it is there (any
        thread). Returns whether the base was read."""
        if self.plane_cache.has(axis, index, 0):
            return False
        self.plane_cache.put(axis, index, 0, self._read_plane(axis, index))
        return True


class LevelShown:
    """What the dock prefetches for a multiscale layer: the planes through the full-resolution
    ``index`` of the levels napari will read, mapped as napari maps them (``round(index / factor)``,
    clipped to the level). On the axis napari slices now the zoom stays, so only the levels ``shown``
    (the one drawn, the thumbnail's); on another axis the level is chosen anew after the move, so
    every level (level 0 costs what a single-scale layer's plane costs, the rest a third more at most).

    Parameters
    ----------
    levels
        ``(ImageLevel, factors)`` per level, finest first (napari's ``downsample_factors``).
    shown
        The levels read while the sliced axis stays ``axis``.
    """

    def __init__(self, levels: Sequence[tuple[ImageLevel, Sequence[float]]], shown: Sequence[int], axis: int | None) -> None:
        self.levels = [(level, tuple(float(f) for f in factors)) for level, factors in levels]
        self.shown = sorted(set(int(k) for k in shown))
        self.axis = axis

    def prefetch(self, axis: int, index: int) -> bool:
        read = False
        for k in (self.shown if axis == self.axis else range(len(self.levels))):
            level, factors = self.levels[k]
            at = int(min(max(0, np.round(index / factors[axis])), level.base.shape[axis] - 1))
            read = level.prefetch(axis, at) or read
        return read


def image_levels(levels: Sequence[Any]) -> Any:
    """The image layer's data: ``read_only(image)`` alone, or ``[ImageLevel(image), ImageLevel(level 1), ...]``
    (napari's multiscale: every level the whole volume, each side ``ceil(n / 2)`` of the one before)."""
    if len(levels) < 2:
        return read_only(levels[0])
    return [ImageLevel(level) for level in levels]


def read_only(array: Any) -> MappedArray:
    """A lazy read-only view (no ``__setitem__``) with a plane cache: napari cannot paint into model outputs."""
    return MappedArray(array, np.asarray, array.dtype)
