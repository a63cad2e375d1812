"""``hdf5``: HDF5 / NeXus.

The array axes as stored are taken as ``(Z, Y, X)``. ``dataset="/entry/data/data"`` picks the
dataset; else the NeXus default ``NXdata``'s ``signal``, else the only dataset with 3 or more
dimensions. Spacing from the attributes ``element_size_um`` (z, y, x in µm) or
``spacing``/``voxel_size`` + ``unit``, or evenly spaced NeXus axis datasets. Lazy
(``h5py.Dataset``); h5py is imported when a file is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import AlAnnotatorError, InputError
from .._lazy import LazyView
from ..volume import VolumeData, normalize_unit
from ._common import ReadOptions, _finish, _head, _reject, _spacing3
from ._registry import Format

__all__ = ["FORMAT", "read_hdf5"]


def _attr_str(v: Any) -> str:
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _attr_str(v[()])
    return str(v)


def _nx_class(obj: Any) -> str:
    return _attr_str(obj.attrs.get("NX_class", ""))


def _nx_signal(group: Any) -> Any | None:
    import h5py

    sig = group.attrs.get("signal")
    if sig is None:
        return None
    ds = group.get(_attr_str(sig))
    return ds if isinstance(ds, h5py.Dataset) else None


def _hdf5_spacing(f: Any, ds: Any) -> tuple[tuple[float, float, float] | None, str | None]:
    import h5py

    if ds.ndim != 3:
        return None, None
    for holder in (ds, ds.parent):
        if "element_size_um" in holder.attrs:
            sp = _spacing3(np.ravel(holder.attrs["element_size_um"]))
            if sp:
                return sp, "micrometer"
        for key in ("spacing", "voxel_size", "voxel_spacing", "pixel_size"):
            if key in holder.attrs:
                sp = _spacing3(np.ravel(holder.attrs[key]))
                if sp:
                    unit = next((holder.attrs[u] for u in ("unit", "units", "spacing_unit") if u in holder.attrs), None)
                    return sp, normalize_unit(_attr_str(unit)) if unit is not None else None
    grp = ds.parent
    if _nx_class(grp) == "NXdata" and "axes" in grp.attrs:
        names = [_attr_str(a) for a in np.ravel(grp.attrs["axes"])]
        if len(names) == 3:
            steps, units = [], []
            for name, n in zip(names, ds.shape):
                ax = grp.get(name)
                if not isinstance(ax, h5py.Dataset) or ax.ndim != 1 or ax.shape[0] != n or n < 2:
                    return None, None
                vals = np.asarray(ax[()], dtype=np.float64)
                d = np.diff(vals)
                if not np.allclose(d, d[0], rtol=1e-3, atol=0):
                    return None, None
                steps.append(abs(float(d[0])))
                units.append(normalize_unit(_attr_str(ax.attrs["units"])) if "units" in ax.attrs else None)
            sp = _spacing3(steps)
            return sp, (units[2] if sp else None)
    return None, None


def _check_hdf5_storage(src: str, ds: Any) -> None:
    """Refuse a dataset none of whose data was ever written (every voxel would read as the fill value).

    A tiny file can declare a huge shape (a chunked dataset created and never filled); importing it
    would write terabytes of fill values. Virtual and external datasets keep their data elsewhere.
    """
    if ds.size == 0 or ds.is_virtual or ds.external:
        return
    try:
        stored = int(ds.id.get_storage_size())
    except Exception:  # noqa: BLE001 - an unusual layout: no check rather than a false alarm
        return
    if stored == 0:
        fill = ds.fillvalue.item() if hasattr(ds.fillvalue, "item") else ds.fillvalue
        raise InputError(
            f"{src}: the dataset {ds.name} declares shape {tuple(ds.shape)} of {ds.dtype} "
            f"({ds.size * ds.dtype.itemsize} bytes) but none of its data was ever written: every voxel would read as "
            f"the fill value {fill!r}. The file is incomplete (the writer stopped before writing the data); "
            "write or export the volume again, or pass dataset= to choose another dataset"
        )


def read_hdf5(path: Path, opts: ReadOptions) -> VolumeData:
    """Read a dataset of an HDF5 / NeXus file (see the module docstring for how it is chosen)."""
    import h5py

    _reject(opts, "HDF5", allow_dataset=True)
    src = str(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(
            f"cannot read {src} as HDF5: {exc}. The file is not HDF5, or is truncated/corrupted; "
            "check it with `h5ls -r` (or h5py) and copy or export it again"
        ) from exc
    try:
        datasets: list[tuple[str, Any]] = []
        nxdata: list[Any] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                datasets.append(("/" + name, obj))
            elif isinstance(obj, h5py.Group) and _nx_class(obj) == "NXdata":
                nxdata.append(obj)

        f.visititems(visit)

        def listing(items: list[tuple[str, Any]]) -> str:
            return ", ".join(f"{n} {tuple(d.shape)} {d.dtype}" for n, d in items[:20]) + (" ..." if len(items) > 20 else "")

        big = [(n, d) for n, d in datasets if d.ndim >= 3]
        ds = None
        how = ""
        if opts.dataset is not None:
            node = f.get(opts.dataset)
            if isinstance(node, h5py.Group):
                node = _nx_signal(node)
                if node is None:
                    raise InputError(
                        f"{src}: {opts.dataset!r} is a group, not a dataset (and has no NeXus signal); "
                        f"datasets with 3+ dimensions: {listing(big) or 'none'}"
                    )
            if not isinstance(node, h5py.Dataset):
                raise InputError(
                    f"{src}: there is no dataset {opts.dataset!r}; pass dataset= one of: {listing(big) or listing(datasets) or 'none (empty file)'}"
                )
            ds, how = node, "dataset option"
        else:
            # NeXus: follow the @default chain, else the only NXdata whose signal is 3D+
            grp: Any = f
            for _ in range(3):
                d = grp.attrs.get("default")
                nxt = grp.get(_attr_str(d)) if d is not None else None
                if not isinstance(nxt, h5py.Group):
                    break
                grp = nxt
            sig = _nx_signal(grp) if _nx_class(grp) == "NXdata" else None
            if sig is not None and sig.ndim >= 3:
                ds, how = sig, "NeXus default signal"
            else:
                sigs = [s for s in (_nx_signal(g) for g in nxdata) if s is not None and s.ndim >= 3]
                if len({s.name for s in sigs}) == 1:
                    ds, how = sigs[0], "NeXus NXdata signal"
            if ds is None:
                if len(big) == 1:
                    ds, how = big[0][1], "only 3D+ dataset"
                elif not big:
                    raise InputError(
                        f"{src}: no dataset with 3 or more dimensions; datasets found: {listing(datasets) or 'none'}. "
                        "A volume must be stored as one 3D dataset"
                    )
                else:
                    raise InputError(
                        f"{src}: several candidate datasets ({len(big)}) with 3+ dimensions: {listing(big)}; "
                        "pass dataset='/path/to/data' to choose one"
                    )
        _check_hdf5_storage(src, ds)
        spacing, unit = _hdf5_spacing(f, ds)
        meta: dict[str, Any] = {"dataset": ds.name, "chosen_by": how, "hdf5_chunks": ds.chunks}
        arr = LazyView(ds, source=f"{src}:{ds.name}")
        arr = _finish(arr, opts=opts, axes=None, source=f"{src}:{ds.name}", meta=meta)
        return VolumeData(arr, spacing, unit, "hdf5", src, meta, (f,))
    except AlAnnotatorError:
        f.close()
        raise
    except Exception as exc:
        f.close()
        raise InputError(f"cannot read {src} as HDF5: {type(exc).__name__}: {exc}; the file may be corrupted") from exc


def _sniff_hdf5(p: Path) -> bool:
    return p.is_file() and _head(p, 8) == b"\x89HDF\r\n\x1a\n"


FORMAT = Format(
    "hdf5", read_hdf5, suffixes=(".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".he5"), sniff=_sniff_hdf5,
    aliases=("h5", "hdf", "nexus", "nxs"),
)
