"""Length units of the voxel spacing, by their OME-NGFF names, and how each file format spells them.

One vocabulary end to end: ``project.json`` (``spacing_unit``), OME-Zarr axes (``unit``), NIfTI
(``xyzt_units``) and ImageJ TIFF (``unit``) all map to the NGFF space-unit names
(``"micrometer"``, ``"millimeter"``...). ``None`` (shown as ``"pixel"``) means the spacing has no
physical unit. :func:`parse_unit` is the one check of a unit a user types (``init --unit``,
``create_project(unit=)``, ``write_volume(spacing_unit=)``).
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from .volume import normalize_unit

__all__ = ["LENGTH_UNITS", "NO_UNIT", "parse_unit", "unit_or_none"]

#: The OME-NGFF 0.4/0.5 space-axis units (the spec's UDUNITS-2 list).
LENGTH_UNITS = (
    "angstrom", "attometer", "centimeter", "decimeter", "exameter", "femtometer", "foot", "gigameter",
    "hectometer", "inch", "kilometer", "megameter", "meter", "micrometer", "mile", "millimeter",
    "nanometer", "parsec", "petameter", "picometer", "terameter", "yard", "yoctometer", "yottameter",
    "zeptometer", "zettameter",
)
#: What ``project.json`` records for a spacing without a physical unit.
NO_UNIT = "pixel"


def parse_unit(value: Any, *, what: str = "the spacing unit") -> str | None:
    """The NGFF name of a length unit as a user or a file spells it; ``None`` for no unit.

    Accepts NGFF names and common spellings (``"um"``, ``"µm"``, ``"micron"``, ``"mm"``, ``"nm"``...);
    ``"pixel"``, ``""`` and ``None`` mean no unit. Anything else raises :class:`InputError` listing
    the accepted names.

    Examples
    --------
    >>> parse_unit("µm"), parse_unit("mm"), parse_unit("pixel")
    ('micrometer', 'millimeter', None)
    """
    unit = normalize_unit(value)
    if unit is None or unit in LENGTH_UNITS:
        return unit
    if isinstance(unit, str) and unit.lower() in LENGTH_UNITS:
        return unit.lower()
    raise InputError(
        f"{what} {value!r} is not a length unit; use an OME-NGFF unit name (micrometer, nanometer, millimeter, "
        f"meter, angstrom, inch, ...: {', '.join(LENGTH_UNITS)}), a short form such as um, nm or mm, or 'pixel' for none"
    )


def unit_or_none(unit: str | None) -> str | None:
    """``project.json``'s ``spacing_unit`` (``"pixel"`` for none) as an NGFF name or ``None``."""
    return None if unit in (None, NO_UNIT) else normalize_unit(unit)
