"""Import and export of volumes.

* :func:`read_volume` opens TIFF / ImageJ / OME-TIFF, a folder of TIFF or PNG slices, HDF5 / NeXus,
  OME-Zarr (NGFF 0.4 and 0.5), NIfTI, a DICOM series, ``.npy`` and raw binary as a
  :class:`VolumeData` with a ``(Z, Y, X)`` array (lazy where the format allows) and its
  ``(z, y, x)`` spacing; see :mod:`.readers` for each format's axis convention.
* :func:`validate_volume` rejects what cannot be annotated (2D, 4D without a channel, empty,
  non-numeric dtypes, NaN/inf) with a message naming the remedy.
* :func:`require_free_space` and :func:`estimate_project_bytes` refuse a project that would not fit
  on the disk (a tiny file can declare a huge volume) before anything is written.
* :func:`write_volume` exports to OME-Zarr (image or NGFF labels group), multipage TIFF, NIfTI and
  npy, slab by slab.

Readers and writers are registries (:data:`READERS`, :data:`WRITERS`): add your own with
:func:`register_reader` / :func:`register_writer`.
"""

from __future__ import annotations

from ._space import estimate_project_bytes, require_free_space
from .readers import READERS, SUFFIXES, ReadOptions, detect_format, natural_key, read_volume, register_reader
from .volume import VolumeData, normalize_unit, to_zyx, validate_volume
from .writers import WRITERS, WriteOptions, register_writer, write_volume

__all__ = [
    "READERS",
    "ReadOptions",
    "SUFFIXES",
    "VolumeData",
    "WRITERS",
    "WriteOptions",
    "detect_format",
    "estimate_project_bytes",
    "natural_key",
    "normalize_unit",
    "read_volume",
    "register_reader",
    "register_writer",
    "require_free_space",
    "to_zyx",
    "validate_volume",
    "write_volume",
]
