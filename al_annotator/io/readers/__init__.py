"""Volume readers: one registry of formats, format detection and :func:`read_volume`.

One module per format (``_tiff``, ``_folder``, ``_hdf5``, ``_ome_zarr``, ``_nifti``, ``_dicom``,
``_npy``, ``_raw``), each defining its reader and its :class:`Format` record (name, suffixes, folder
markers, sniffer, aliases); ``_registry`` holds the records and detects formats from them, so
:func:`detect_format`, ``read_volume(format=...)`` and the napari plugin's reader all read one list.

Formats (registry names) and axis conventions
---------------------------------------------
Every reader returns a 3D ``(Z, Y, X)`` array and spacing in ``(z, y, x)`` order.

``tiff``
    Multipage TIFF, ImageJ hyperstack, OME-TIFF (``.tif .tiff .btf .tf8``). The first series
    (``dataset="1"`` picks another) with tifffile's axes: pages are z; the channel axis is the
    file's ``C``/``S``/``T`` axis. Spacing from ImageJ metadata (``spacing`` = z, resolution
    tags = y, x, ``unit``) or OME ``PhysicalSize{Z,Y,X}``. Memory-mapped when the pixel data are
    contiguous and uncompressed, else read page by page on demand.
``slices``
    A folder of 2D TIFF or PNG slices, naturally sorted by file name (``slice_2`` < ``slice_10``);
    file i is ``z = i``. No spacing. Read slice by slice on demand.
``hdf5``
    HDF5 / NeXus (``.h5 .hdf5 .hdf .nxs .nx5 .he5``): the array axes as stored are taken as
    ``(Z, Y, X)``. ``dataset="/entry/data/data"`` picks the dataset; else the NeXus default
    ``NXdata``'s ``signal``, else the only dataset with 3 or more dimensions. Spacing from the
    attributes ``element_size_um`` (z, y, x in µm) or ``spacing``/``voxel_size`` + ``unit``, or
    evenly spaced NeXus axis datasets. Lazy (``h5py.Dataset``).
``ome-zarr``
    OME-NGFF 0.4 (zarr v2) or 0.5 (zarr v3) image (``.zarr``, ``.ome.zarr`` or a folder with zarr
    metadata): the first multiscale's full-resolution dataset; axes from ``axes`` (channel axis =
    ``type: channel``); spacing from the ``coordinateTransformations`` scale of the spatial axes.
    ``dataset="labels/cells"`` picks a sub-image (e.g. a label image). Lazy (``zarr.Array``).
``nifti``
    ``.nii`` / ``.nii.gz``. NIfTI stores voxels as ``(X, Y, Z)`` (i fastest); the array is returned
    transposed to ``(Z, Y, X)`` = ``data.T`` (no reorientation by the affine: voxel order as stored),
    and spacing is the header zooms reversed. A 4th dimension is the channel axis. Memory-mapped
    (``.nii``) or streamed (``.nii.gz``). Scaling (``scl_slope``/``scl_inter``) is applied only when
    not identity.
``dicom``
    A folder with one DICOM series (or ``dataset=SeriesInstanceUID``): slices sorted by
    ``ImagePositionPatient`` along the slice normal (fallback ``InstanceNumber``), z = slice order,
    y = rows, x = columns; spacing from slice positions and ``PixelSpacing`` (mm). Rescale
    slope/intercept applied only when not identity. Read slice by slice on demand.
``npy``
    ``np.load(mmap_mode="r")``; axes as stored.
``raw``
    Headerless binary: ``shape=(Z, Y, X)`` and ``dtype`` required, ``offset`` header bytes,
    ``byte_order``; memory-mapped.
"""

from __future__ import annotations

from . import _dicom, _folder, _hdf5, _nifti, _npy, _ome_zarr, _raw, _tiff
from ._common import ReadOptions, Reader, natural_key
from ._read import read_volume
from ._registry import READERS, SUFFIXES, Format, detect_format, formats, openable_suffixes, register, register_reader

# the per-format readers stay importable from here, as before the one-module-per-format split
from ._dicom import read_dicom  # noqa: F401
from ._folder import read_slices  # noqa: F401
from ._hdf5 import read_hdf5  # noqa: F401
from ._nifti import read_nifti  # noqa: F401
from ._npy import read_npy  # noqa: F401
from ._ome_zarr import read_ome_zarr  # noqa: F401
from ._raw import read_raw  # noqa: F401
from ._tiff import read_tiff  # noqa: F401

__all__ = [
    "Format",
    "ReadOptions",
    "Reader",
    "READERS",
    "register_reader",
    "detect_format",
    "formats",
    "openable_suffixes",
    "read_volume",
    "natural_key",
    "SUFFIXES",
]

# registration order is the order in which content sniffers run
for _module in (_tiff, _hdf5, _ome_zarr, _nifti, _dicom, _folder, _npy, _raw):
    register(_module.FORMAT)
del _module
