"""``ome-zarr``: OME-NGFF 0.4 (zarr v2) or 0.5 (zarr v3) image, or a plain zarr array.

A ``.zarr`` / ``.ome.zarr`` folder or any folder with zarr metadata: the first multiscale's
full-resolution dataset; axes from ``axes`` (channel axis = ``type: channel``); spacing from the
``coordinateTransformations`` scale of the spatial axes. ``dataset="labels/cells"`` picks a
sub-image (e.g. a label image). Lazy (``zarr.Array``); zarr is imported when a store is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import AlAnnotatorError, InputError
from .._lazy import LazyView
from .._zarr import BloscChunkCheck, blosc_chunk_dir, has_stored_chunks
from ..volume import VolumeData, normalize_unit
from ._common import ReadOptions, _finish, _reject, _spacing3
from ._registry import Format

__all__ = ["FORMAT", "read_ome_zarr"]

#: Metadata files that make a folder a zarr store (v2 and v3).
ZARR_MARKERS = (".zgroup", ".zarray", ".zattrs", "zarr.json")


def _zarr_attrs(node: Any) -> dict[str, Any]:
    attrs = dict(node.attrs)
    ome = attrs.get("ome")
    if isinstance(ome, dict):  # NGFF 0.5 keeps everything under "ome"
        merged = dict(attrs)
        merged.update(ome)
        return merged
    return attrs


def _ngff_image(group: Any, src: str) -> tuple[Any, tuple[float, float, float] | None, str | None, str | None, dict[str, Any]]:
    attrs = _zarr_attrs(group)
    ms_all = attrs.get("multiscales")
    if not isinstance(ms_all, list) or not ms_all:
        raise InputError(f"{src}: no OME-NGFF 'multiscales' metadata in group {group.path or '/'}")
    ms = ms_all[0]
    dsets = ms.get("datasets") or []
    if not dsets:
        raise InputError(f"{src}: the multiscales metadata lists no datasets; the OME-Zarr image is incomplete")
    level0 = dsets[0]
    try:
        arr = group[level0["path"]]
    except KeyError as exc:
        raise InputError(f"{src}: the multiscales' full-resolution dataset {level0.get('path')!r} is missing from the store") from exc
    ndim = len(arr.shape)
    version = str(ms.get("version", attrs.get("version", "")))
    raw_axes = ms.get("axes")
    if raw_axes is None:  # NGFF <= 0.2: always 5D tczyx
        axes_list = [{"name": n, "type": t} for n, t in zip("tczyx", ["time", "channel", "space", "space", "space"])][-ndim:]
    else:
        axes_list = [a if isinstance(a, dict) else {"name": str(a)} for a in raw_axes]
    letters = ""
    for a in axes_list:
        name, typ = str(a.get("name", "")).lower(), str(a.get("type", "")).lower()
        if typ == "channel" or name == "c":
            letters += "C"
        elif typ == "time" or name == "t":
            letters += "T"
        elif name in ("z", "y", "x"):
            letters += name.upper()
        elif typ == "space":
            letters += "Z"
        else:
            letters += "Q"
    if len(letters) != ndim:
        letters = ""

    scale = [1.0] * ndim
    for transforms in (level0.get("coordinateTransformations") or [], ms.get("coordinateTransformations") or []):
        for t in transforms:
            if t.get("type") == "scale" and isinstance(t.get("scale"), list) and len(t["scale"]) == ndim:
                scale = [s * float(v) for s, v in zip(scale, t["scale"])]
    spacing = unit = None
    space_idx = [i for i, a in enumerate(axes_list) if str(a.get("type", "")).lower() == "space" or str(a.get("name", "")).lower() in "zyx"]
    if len(space_idx) == 3:
        spacing = _spacing3([scale[i] for i in space_idx])
        units = [a.get("unit") for a in (axes_list[i] for i in space_idx)]
        unit = normalize_unit(units[-1]) if spacing else None
    meta = {"ngff_version": version, "dataset": f"{group.path + '/' if group.path else ''}{level0['path']}", "ngff_axes": letters or None}
    if "image-label" in attrs:
        meta["image_label"] = True
    return arr, spacing, unit, letters or None, meta


def read_ome_zarr(path: Path, opts: ReadOptions) -> VolumeData:
    """Read an OME-NGFF (0.4 / 0.5) image, or a plain zarr array (see the module docstring)."""
    import zarr

    _reject(opts, "OME-Zarr", allow_dataset=True)
    src = str(path)
    try:
        root = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise InputError(
            f"cannot read {src} as OME-Zarr: {type(exc).__name__}: {exc}. It must be a zarr v2 or v3 store "
            "(a folder with .zgroup/.zattrs or zarr.json); check the path points at the store's top folder"
        ) from exc
    try:
        node = root
        if opts.dataset is not None:
            if not isinstance(root, zarr.Group):
                raise InputError(f"{src} is a single zarr array; dataset={opts.dataset!r} only applies to groups")
            try:
                node = root[opts.dataset.strip("/")]
            except KeyError:
                names = sorted(k for k, _ in root.members(max_depth=None))
                raise InputError(f"{src}: no node {opts.dataset!r} in the store; nodes: {', '.join(names[:30]) or 'none'}") from None
        if isinstance(node, zarr.Array):
            arr, spacing, unit, axes, meta = node, None, None, None, {"dataset": node.path}
            parent_path = node.path.rsplit("/", 1)[0] if "/" in node.path else ""
            parent = root[parent_path] if parent_path and isinstance(root, zarr.Group) else (root if isinstance(root, zarr.Group) else None)
            if parent is not None and "multiscales" in _zarr_attrs(parent):
                arr0, sp0, unit0, axes0, meta0 = _ngff_image(parent, src)
                if arr0.path == node.path:
                    arr, spacing, unit, axes, meta = arr0, sp0, unit0, axes0, meta0
        else:
            attrs = _zarr_attrs(node)
            if "multiscales" in attrs:
                arr, spacing, unit, axes, meta = _ngff_image(node, src)
            else:
                labels_grp = node.get("labels") if hasattr(node, "get") else None
                label_names = _zarr_attrs(labels_grp).get("labels", []) if isinstance(labels_grp, zarr.Group) else []
                if len(label_names) == 1:
                    arr, spacing, unit, axes, meta = _ngff_image(labels_grp[label_names[0]], src)
                elif label_names:
                    raise InputError(
                        f"{src}: the store has no image but {len(label_names)} label images {label_names}; "
                        f"pass dataset='labels/{label_names[0]}' to choose one"
                    )
                else:
                    arrays = [(k, a) for k, a in node.arrays()] if hasattr(node, "arrays") else []
                    big = [(k, a) for k, a in node.members(max_depth=None) if isinstance(a, zarr.Array) and a.ndim >= 3]
                    if len(big) == 1:
                        arr, spacing, unit, axes, meta = big[0][1], None, None, None, {"dataset": big[0][0]}
                    else:
                        found = ", ".join(f"{k} {a.shape}" for k, a in (big or arrays)[:20]) or "none"
                        raise InputError(
                            f"{src}: the zarr group has no OME-NGFF 'multiscales' metadata and "
                            f"{len(big)} arrays with 3+ dimensions ({found}); pass dataset='path/in/store' to choose one"
                        )
        meta["zarr_format"] = int(arr.metadata.zarr_format)
        if arr.size and has_stored_chunks(arr) is False:
            raise InputError(
                f"{src}: the array {arr.path or '/'} declares shape {tuple(arr.shape)} of {arr.dtype} but the store holds "
                f"none of its chunks: every voxel would read as the fill value {getattr(arr.fill_value, 'item', lambda: arr.fill_value)()!r}. The image was never "
                "written, or its chunk files were not copied: copy the whole .zarr folder again, or pass dataset= to "
                "choose another array"
            )
        chunk_dir = blosc_chunk_dir(arr)
        view = LazyView(BloscChunkCheck(arr, chunk_dir, src) if chunk_dir is not None else arr, source=src)
        view = _finish(view, opts=opts, axes=axes, source=src, meta=meta)
        return VolumeData(view, spacing, unit, "ome-zarr", src, meta)
    except AlAnnotatorError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read {src} as OME-Zarr: {type(exc).__name__}: {exc}; the store may be incomplete or corrupted") from exc


FORMAT = Format(
    "ome-zarr", read_ome_zarr, suffixes=(".zarr",), folder=True, suffixes_name_folders=True, markers=ZARR_MARKERS,
    aliases=("zarr", "ngff", "omezarr", "ome_zarr"),
)
