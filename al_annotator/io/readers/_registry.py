"""The one registry of volume formats, and format detection from it.

Each format is a :class:`Format` record: its name, its reader, the file-name endings and folder
markers that identify it, a content ``sniff`` where the name does not, and its aliases. Everything
that asks "which reader opens this path" reads these records: :func:`detect_format`,
``read_volume(format=...)`` (names and aliases), and the napari plugin's reader
(:func:`openable_suffixes`). :data:`READERS` and :data:`SUFFIXES` are live views of it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from ...errors import InputError
from ._common import Reader

__all__ = [
    "Format",
    "READERS",
    "SUFFIXES",
    "detect_format",
    "format_name",
    "formats",
    "not_found",
    "openable_suffixes",
    "register",
    "register_reader",
]


def _suffix(s: str) -> str:
    s = s.lower()
    return s if s.startswith(".") else "." + s


@dataclass(frozen=True, slots=True)
class Format:
    """A volume format as :func:`detect_format` and :func:`~al_annotator.io.read_volume` see it.

    Attributes
    ----------
    name
        Registry name: ``read_volume(..., format=name)`` and ``VolumeData.format``.
    reader
        ``reader(path, options) -> VolumeData``.
    suffixes
        File-name endings (lower case, with the dot) that name a file of this format.
    sniff
        ``sniff(path) -> bool``: recognises the format by content when no suffix matches.
    folder
        The format reads a folder: its ``sniff``/``markers`` are tried first, before file sniffers.
    suffixes_name_folders
        The ``suffixes`` also name a folder (``scan.zarr/``), not only a file.
    markers
        File names whose presence in a folder identifies the format (``zarr.json``).
    member_suffixes
        Endings of the files such a folder holds; one such file alone is refused with a hint.
    aliases
        Other names accepted as ``format=`` (``"tif"`` for ``"tiff"``).
    self_describing
        ``False`` when the path alone does not say how to read it (headerless ``raw`` needs shape
        and dtype): such a format is never offered to a file browser (napari).
    """

    name: str
    reader: Reader
    suffixes: tuple[str, ...] = ()
    sniff: Callable[[Path], bool] | None = None
    folder: bool = False
    suffixes_name_folders: bool = False
    markers: tuple[str, ...] = ()
    member_suffixes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    self_describing: bool = True

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise InputError(f"a reader needs a non-empty string name, got {self.name!r}")
        if not callable(self.reader):
            raise InputError(f"reader for {self.name!r} must be callable as reader(path, options), got {self.reader!r}")
        if self.sniff is not None and not callable(self.sniff):
            raise InputError(f"sniff for {self.name!r} must be callable as sniff(path) -> bool, got {self.sniff!r}")
        for attr in ("suffixes", "member_suffixes"):
            object.__setattr__(self, attr, tuple(dict.fromkeys(_suffix(s) for s in getattr(self, attr))))
        object.__setattr__(self, "markers", tuple(self.markers))
        object.__setattr__(self, "aliases", tuple(a.lower() for a in self.aliases))

    def recognises(self, path: Path) -> bool:
        """Whether the content of ``path`` (a folder's markers, else ``sniff``) is this format's."""
        if self.markers and path.is_dir() and any((path / m).is_file() for m in self.markers):
            return True
        return self.sniff is not None and bool(self.sniff(path))


#: The registry: format name -> :class:`Format`, in registration order (the order sniffers run).
_FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add (or replace) ``fmt``; a suffix another format had moves to ``fmt`` (the last one wins)."""
    for name, other in list(_FORMATS.items()):
        if name != fmt.name and set(other.suffixes) & set(fmt.suffixes):
            _FORMATS[name] = replace(other, suffixes=tuple(s for s in other.suffixes if s not in fmt.suffixes))
    _FORMATS[fmt.name] = fmt
    return fmt


def unregister(name: str) -> Format:
    """Remove a format (with its suffixes and sniffer); ``KeyError`` when there is none."""
    return _FORMATS.pop(name)


def formats() -> tuple[Format, ...]:
    """The registered formats, in registration order."""
    return tuple(_FORMATS.values())


def register_reader(
    name: str,
    reader: Reader,
    *,
    suffixes: Sequence[str] = (),
    sniff: Callable[[Path], bool] | None = None,
    **fields: object,
) -> None:
    """Add (or replace) a reader in the registry.

    Parameters
    ----------
    name
        Registry name, used as ``read_volume(..., format=name)`` and as ``VolumeData.format``.
    reader
        ``reader(path: Path, options: ReadOptions) -> VolumeData``. It should raise
        :class:`InputError` on bad input; other exceptions are wrapped by :func:`read_volume`.
        A non-3D array is passed through :func:`~al_annotator.io.volume.to_zyx`.
    suffixes
        File-name endings (``".mrc"``) that :func:`detect_format` maps to this reader.
    sniff
        ``sniff(path) -> bool`` used by :func:`detect_format` when no suffix matches.
    **fields
        Other :class:`Format` fields (``folder=True``, ``markers=(...)``, ``aliases=(...)``,
        ``self_describing=False``...).

    Replacing a registered name keeps its suffixes, sniffer and other fields unless given anew
    (suffixes are added to the old ones), so ``register_reader("tiff", my_tiff_reader)`` only swaps
    the reader.

    Examples
    --------
    >>> def read_mrc(path, options): ...  # doctest: +SKIP
    >>> register_reader("mrc", read_mrc, suffixes=(".mrc", ".rec"))  # doctest: +SKIP
    """
    unknown = set(fields) - {f for f in Format.__dataclass_fields__ if f not in ("name", "reader", "suffixes", "sniff")}
    if unknown:
        raise InputError(f"register_reader got unknown field(s) {sorted(unknown)}; Format fields: {sorted(Format.__dataclass_fields__)}")
    old = _FORMATS.get(name) if isinstance(name, str) else None
    if old is None:
        register(Format(name, reader, tuple(suffixes), sniff, **fields))  # type: ignore[arg-type]
        return
    register(replace(old, reader=reader, suffixes=old.suffixes + tuple(suffixes), sniff=sniff or old.sniff, **fields))


class _ReaderView(MutableMapping[str, Reader]):
    """``READERS``: format name -> reader, a live view of the registry (del unregisters the format)."""

    def __getitem__(self, name: str) -> Reader:
        return _FORMATS[name].reader

    def __setitem__(self, name: str, reader: Reader) -> None:
        register_reader(name, reader)

    def __delitem__(self, name: str) -> None:
        unregister(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(_FORMATS))

    def __len__(self) -> int:
        return len(_FORMATS)

    def __repr__(self) -> str:
        return f"READERS({dict(self)!r})"


class _SuffixView(MutableMapping[str, str]):
    """``SUFFIXES``: file-name ending -> format name, a live view of the registry."""

    def _table(self) -> dict[str, str]:
        return {s: f.name for f in _FORMATS.values() for s in f.suffixes}

    def __getitem__(self, suffix: str) -> str:
        return self._table()[suffix]

    def __setitem__(self, suffix: str, name: str) -> None:
        if name not in _FORMATS:
            raise InputError(f"no format {name!r} to map {suffix!r} to; register it first with register_reader")
        fmt = _FORMATS[name]
        register(replace(fmt, suffixes=fmt.suffixes + (_suffix(suffix),)))

    def __delitem__(self, suffix: str) -> None:
        fmt = _FORMATS[self._table()[suffix]]
        _FORMATS[fmt.name] = replace(fmt, suffixes=tuple(s for s in fmt.suffixes if s != suffix))

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return f"SUFFIXES({self._table()!r})"


#: Format name -> reader (a live view of the registry). Extend with :func:`register_reader`.
READERS: MutableMapping[str, Reader] = _ReaderView()
#: File-name endings -> format name, used by :func:`detect_format` (longest match first).
SUFFIXES: MutableMapping[str, str] = _SuffixView()


def openable_suffixes() -> tuple[str, ...]:
    """File-name endings of the formats that open from the path alone (what napari is offered).

    ``raw`` is left out: a headerless file needs ``shape`` and ``dtype``.
    """
    return tuple(s for f in _FORMATS.values() if f.self_describing for s in f.suffixes)


def format_name(fmt: str) -> str:
    """The registry name of ``fmt`` (a name or an alias, any case)."""
    key = fmt.strip().lower()
    if key not in _FORMATS:
        key = next((f.name for f in _FORMATS.values() if key in f.aliases), key)
    if key not in _FORMATS:
        raise InputError(f"unknown format {fmt!r}; known formats: {sorted(_FORMATS)} (add one with register_reader)")
    return key


def not_found(path: Path) -> InputError:
    """The error for a path that does not exist, with similar names next to it."""
    parent = path.parent
    hint = ""
    if parent.is_dir():
        near = sorted(p.name for p in parent.iterdir() if p.name.lower().startswith(path.name[:3].lower()))[:5]
        if near:
            hint = f" (similar names there: {near})"
    elif str(parent) not in ("", "."):
        hint = f" (its folder {parent} does not exist either)"
    return InputError(f"{path} does not exist{hint}; check the path (relative paths start at {Path.cwd()})")


def match_suffix(path: Path) -> str | None:
    """The format whose suffix ends ``path``'s name (longest match), or ``None``.

    A folder matches only the suffixes of formats whose suffixes name folders (``.zarr``).
    """
    name = path.name.lower()
    is_dir = path.is_dir()
    candidates = [(s, f.name) for f in _FORMATS.values() if not is_dir or f.suffixes_name_folders for s in f.suffixes]
    for suffix, fmt in sorted(candidates, key=lambda c: len(c[0]), reverse=True):
        if name.endswith(suffix):
            return fmt
    return None


def detect_format(path: str | os.PathLike[str]) -> str:
    """The registry name of the reader for ``path``, by file-name ending, then by content.

    Folders: a zarr store -> ``ome-zarr``, DICOM files -> ``dicom``, TIFF/PNG slices -> ``slices``
    (the folder formats' markers and sniffers, in registration order).

    Raises
    ------
    InputError
        When the path does not exist or no reader recognises it.

    Examples
    --------
    >>> detect_format("scan.nii.gz")  # doctest: +SKIP
    'nifti'
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise not_found(p)
    by_name = match_suffix(p)
    if by_name is not None:
        return by_name
    name = p.name.lower()
    if p.is_file():
        for f in _FORMATS.values():
            lone = next((s for s in f.member_suffixes if name.endswith(s)), None)
            if lone is not None:
                kind = lone[1:].upper()
                raise InputError(f"{p}: a single {kind} is a 2D image, not a volume; give the folder holding all the {kind} slices")
    for f in _FORMATS.values():  # folder formats first; their sniffers' errors are not hidden
        if f.folder and f.recognises(p):
            return f.name
    for f in _FORMATS.values():
        if not f.folder:
            with contextlib.suppress(Exception):
                if f.recognises(p):
                    return f.name
    what = "folder" if p.is_dir() else "file"
    raise InputError(
        f"cannot detect the format of the {what} {p}; pass format= one of {sorted(_FORMATS)} "
        "(for a headerless binary file: format='raw', shape=(Z, Y, X), dtype=...)"
    )
