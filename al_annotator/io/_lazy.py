"""Lazy array views: read only what is sliced, and turn library errors into :class:`InputError`.

Two building blocks are used by the readers:

* :class:`LazyView` wraps any array-like that supports basic slicing (``h5py.Dataset``,
  ``zarr.Array``, ...) and can fix some axes to one index (channel pick, singleton squeeze),
  reorder axes, and convert values (intensity rescaling) without reading anything up front.
* :class:`PlaneStackArray` is an array assembled from 2D planes read on demand (TIFF pages,
  a folder of slices, a DICOM series, a gzip-compressed NIfTI stream).

Both support ``.shape``, ``.dtype``, ``.ndim``, ``len()``, basic indexing with integers,
slices (positive or negative steps) and ``Ellipsis``, and ``np.asarray``.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import AlAnnotatorError, InputError

__all__ = ["LazyView", "PlaneStackArray", "normalize_key", "take", "transpose", "is_lazy", "native"]

#: Exceptions raised by the I/O libraries on unreadable, truncated or corrupted data.
READ_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, EOFError, KeyError, RuntimeError, TypeError)


def normalize_key(key: Any, shape: Sequence[int]) -> tuple[int | slice, ...]:
    """Expand an index into one ``int`` or ``slice`` per axis; integers are bound-checked and made >= 0.

    Raises
    ------
    IndexError
        On an out-of-range integer or too many indices.
    TypeError
        On advanced (array, boolean, ``None``) indexing, which lazy arrays do not support.
    """
    if not isinstance(key, tuple):
        key = (key,)
    n_ellipsis = sum(1 for k in key if k is Ellipsis)
    if n_ellipsis > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if n_ellipsis:
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = len(shape) - (len(key) - 1)
        key = key[:i] + (slice(None),) * fill + key[i + 1 :]
    if len(key) > len(shape):
        raise IndexError(f"too many indices: {len(key)} given for an array of shape {tuple(shape)}")
    key = key + (slice(None),) * (len(shape) - len(key))
    out: list[int | slice] = []
    for k, n in zip(key, shape):
        if isinstance(k, slice):
            out.append(k)
        elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
            i = int(k)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for an axis of length {n}")
            out.append(i + n if i < 0 else i)
        else:
            raise TypeError(
                f"lazy volume arrays support integers, slices and '...' only, got {type(k).__name__}; "
                "read a slab with np.asarray(array[z0:z1]) first, then index that"
            )
    return tuple(out)


def _wrap_read_error(source: str, exc: BaseException) -> InputError:
    return InputError(
        f"cannot read {source}: {type(exc).__name__}: {exc}. The file may be truncated or corrupted; "
        "check that it was copied completely (compare its size with the original) and re-export it if needed"
    )


class _ArrayLike:
    """What both lazy arrays derive from their ``shape`` and ``_dtype``: ``dtype``, ``ndim``, ``size``,
    ``nbytes`` and ``len()``."""

    _dtype: np.dtype

    @property
    def shape(self) -> tuple[int, ...]:  # pragma: no cover - defined by the subclasses
        raise NotImplementedError

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self._dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]


class LazyView(_ArrayLike):
    """A lazy view of an array-like ``base``: some axes fixed to one index, the others reordered.

    Parameters
    ----------
    base
        Anything with ``.shape``, ``.dtype`` and basic slicing.
    index
        One entry per base axis: an ``int`` fixes that axis, ``None`` keeps it.
    order
        The kept base axes in view order (default: increasing).
    convert
        Optional function applied to every block read (e.g. intensity rescaling).
    dtype
        The dtype after ``convert`` (default: the base's).
    source
        Named in the :class:`InputError` raised when the base fails to read.
    """

    def __init__(
        self,
        base: Any,
        index: Sequence[int | None] | None = None,
        order: Sequence[int] | None = None,
        *,
        convert: Callable[[np.ndarray], np.ndarray] | None = None,
        dtype: Any = None,
        source: str = "the volume",
    ) -> None:
        self.base = base
        self.index: tuple[int | None, ...] = tuple(index) if index is not None else (None,) * len(base.shape)
        free = [b for b, i in enumerate(self.index) if i is None]
        self.order: tuple[int, ...] = tuple(order) if order is not None else tuple(free)
        if sorted(self.order) != free:
            raise ValueError(f"order {self.order} must be a permutation of the free axes {free}")
        self.convert = convert
        # values come back in native byte order (a big-endian file gives ordinary arrays)
        self._dtype = np.dtype(dtype) if dtype is not None else np.dtype(base.dtype).newbyteorder("=")
        self.source = source

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(self.base.shape[b]) for b in self.order)

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """The base's chunk shape in view order, when the base is chunked (HDF5, zarr)."""
        ch = getattr(self.base, "chunks", None)
        if ch is None or len(ch) != len(self.index) or not all(isinstance(c, (int, np.integer)) for c in ch):
            return None
        return tuple(int(ch[b]) for b in self.order)

    def __repr__(self) -> str:
        return f"<LazyView shape={self.shape} dtype={self.dtype} of {type(self.base).__name__} from {self.source}>"

    def __getitem__(self, key: Any) -> np.ndarray:
        key = list(normalize_key(key, self.shape))
        flip = []  # h5py and zarr refuse negative steps: read forwards, then reverse
        for a, (k, n) in enumerate(zip(key, self.shape)):
            if isinstance(k, slice) and k.step is not None and k.step < 0:
                idx = range(*k.indices(n))
                key[a] = slice(idx[-1], idx[0] + 1, -k.step) if len(idx) else slice(0, 0)
                flip.append(a)
        base_key: list[Any] = list(self.index)
        for a, k in enumerate(key):
            base_key[self.order[a]] = k
        try:
            res = np.asarray(self.base[tuple(base_key)])
        except AlAnnotatorError:
            raise
        except READ_ERRORS as exc:
            raise _wrap_read_error(self.source, exc) from exc
        kept_base = [b for b, k in enumerate(base_key) if isinstance(k, slice)]
        wanted = [self.order[a] for a, k in enumerate(key) if isinstance(k, slice)]
        if kept_base != wanted:
            res = res.transpose([kept_base.index(b) for b in wanted])
        if flip:
            out_axes = [a for a, k in enumerate(key) if isinstance(k, slice)]
            res = res[tuple(slice(None, None, -1) if a in flip else slice(None) for a in out_axes)]
        if self.convert is not None:
            res = self.convert(res)
        return np.asarray(res, dtype=self._dtype) if res.dtype != self._dtype else res

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def take(self, axis: int, i: int) -> "LazyView":
        """A view with view axis ``axis`` fixed at index ``i`` (the axis disappears)."""
        index = list(self.index)
        index[self.order[axis]] = int(i)
        order = self.order[:axis] + self.order[axis + 1 :]
        return LazyView(self.base, index, order, convert=self.convert, dtype=self._dtype, source=self.source)

    def transpose(self, perm: Sequence[int]) -> "LazyView":
        """A view with axes reordered like ``np.transpose(view, perm)``."""
        order = tuple(self.order[p] for p in perm)
        return LazyView(self.base, self.index, order, convert=self.convert, dtype=self._dtype, source=self.source)


class PlaneStackArray(_ArrayLike):
    """An N-D array made of 2D (or 2D + samples) planes read on demand.

    Parameters
    ----------
    lead_shape
        The shape of the axes in front of the planes (e.g. ``(Z,)`` or ``(C, Z)``).
    plane_shape
        The shape of one plane, ``(Y, X)`` or ``(Y, X, S)``.
    dtype
        The dtype of the planes returned.
    read_planes
        ``read_planes(i0, i1)`` returns planes ``i0 .. i1 - 1`` (flat, row-major over ``lead_shape``)
        as an array of shape ``(i1 - i0, *plane_shape)``.
    source
        Named in the :class:`InputError` raised when reading fails.
    """

    def __init__(
        self,
        lead_shape: Sequence[int],
        plane_shape: Sequence[int],
        dtype: Any,
        read_planes: Callable[[int, int], np.ndarray],
        *,
        source: str = "the volume",
    ) -> None:
        self.lead_shape = tuple(int(n) for n in lead_shape)
        self.plane_shape = tuple(int(n) for n in plane_shape)
        self._dtype = np.dtype(dtype).newbyteorder("=")
        self._read = read_planes
        self.source = source
        self._lock = threading.Lock()

    @classmethod
    def from_plane_reader(
        cls,
        lead_shape: Sequence[int],
        plane_shape: Sequence[int],
        dtype: Any,
        read_plane: Callable[[int], np.ndarray],
        *,
        source: str = "the volume",
    ) -> "PlaneStackArray":
        """Build from a function reading one plane by its flat index."""

        def read_planes(i0: int, i1: int) -> np.ndarray:
            return np.stack([np.asarray(read_plane(i)) for i in range(i0, i1)])

        return cls(lead_shape, plane_shape, dtype, read_planes, source=source)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.lead_shape + self.plane_shape

    def __repr__(self) -> str:
        return f"<PlaneStackArray shape={self.shape} dtype={self.dtype} from {self.source}>"

    def __getitem__(self, key: Any) -> np.ndarray:
        key = normalize_key(key, self.shape)
        nl = len(self.lead_shape)
        lead_key, plane_key = key[:nl], key[nl:]
        lists = [[k] if isinstance(k, int) else list(range(*k.indices(n))) for k, n in zip(lead_key, self.lead_shape)]
        out_lead = [len(lst) for lst, k in zip(lists, lead_key) if isinstance(k, slice)]
        dummy = np.broadcast_to(np.zeros((), self._dtype), self.plane_shape)
        out_plane = dummy[plane_key].shape
        out = np.empty(tuple(out_lead) + out_plane, dtype=self._dtype)
        flat_out = out.reshape((-1,) + out_plane)
        if flat_out.shape[0] == 0:
            return out
        flat = [int(np.ravel_multi_index(idx, self.lead_shape)) for idx in itertools.product(*lists)]
        # read consecutive runs of planes in one call (sequential streams, batched decoding)
        pos = 0
        while pos < len(flat):
            end, step = pos + 1, 1
            if end < len(flat) and flat[end] - flat[pos] in (1, -1):
                step = flat[end] - flat[pos]
                while end < len(flat) and flat[end] - flat[end - 1] == step:
                    end += 1
            lo, hi = min(flat[pos], flat[end - 1]), max(flat[pos], flat[end - 1]) + 1
            try:
                with self._lock:
                    block = np.asarray(self._read(lo, hi))
            except AlAnnotatorError:
                raise
            except READ_ERRORS as exc:
                raise _wrap_read_error(self.source, exc) from exc
            if block.shape != (hi - lo,) + self.plane_shape:
                raise InputError(
                    f"cannot read {self.source}: planes {lo}..{hi - 1} have shape {block.shape[1:]} "
                    f"but the volume's planes are {self.plane_shape}; all slices must have the same size"
                )
            if step < 0:
                block = block[::-1]
            flat_out[pos:end] = block[(slice(None),) + plane_key]
            pos = end
        return out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)


def native(array: Any, *, source: str = "the volume") -> Any:
    """``array`` itself if its dtype is in native byte order, else a :class:`LazyView` converting on read."""
    dt = np.dtype(array.dtype)
    if dt.isnative:
        return array
    return LazyView(array, dtype=dt.newbyteorder("="), source=source)


def is_lazy(array: Any) -> bool:
    """True for arrays that are not plain in-memory ``numpy.ndarray`` (memmaps count as lazy)."""
    return isinstance(array, np.memmap) or not isinstance(array, np.ndarray)


def take(array: Any, axis: int, i: int, *, source: str = "the volume") -> Any:
    """``array`` with ``axis`` fixed at index ``i``: a numpy view, or a :class:`LazyView`."""
    if isinstance(array, np.ndarray):
        return array[(slice(None),) * axis + (int(i),)]
    if not isinstance(array, LazyView):
        array = LazyView(array, source=source)
    return array.take(axis, i)


def transpose(array: Any, perm: Sequence[int], *, source: str = "the volume") -> Any:
    """``array`` with axes reordered: a numpy view, or a :class:`LazyView`."""
    if list(perm) == list(range(len(perm))):
        return array
    if isinstance(array, np.ndarray):
        return array.transpose(perm)
    if not isinstance(array, LazyView):
        array = LazyView(array, source=source)
    return array.transpose(perm)
