"""Frozen, validated configuration objects.

Label values are 1-based: ``0`` is *unlabelled* (ignored by the loss), class ``i`` of
``ProjectConfig.classes`` is stored as label value ``i + 1``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from .errors import InputError

__all__ = ["ProjectConfig", "DEFAULT_CLASSES", "DEFAULT_COLOURS", "SCHEMA_VERSION", "parse_classes", "parse_spacing"]

#: Version of the on-disk project layout; bumped on any incompatible change.
SCHEMA_VERSION = 1

#: The DESY/Hereon magnesium-implant classes.
DEFAULT_CLASSES: tuple[str, ...] = ("background", "bone", "implant", "degradation")

#: Colour-blind-friendly palette (Okabe-Ito first, then Tableau), one per class in order. Every
#: colour is saturated (chroma >= 60/255): a grey class colour (the first one was #7f7f7f) vanishes
#: on grey CT, where background is the class painted most.
DEFAULT_COLOURS: tuple[str, ...] = (
    "#cc79a7", "#e69f00", "#56b4e9", "#d55e00", "#009e73", "#f0e442", "#0072b2", "#17becf",
    "#bcbd22", "#9467bd", "#8c564b", "#e377c2",
)

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
MAX_CLASSES = 254


def parse_classes(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"background,bone"`` or a sequence of names -> a validated tuple of class names."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    if any(not n for n in names):
        raise InputError(f"class names must not be empty: got {list(names)!r}; give e.g. --classes background,bone,implant")
    if len(names) < 2:
        raise InputError(f"a segmentation needs at least 2 classes, got {names!r}")
    if len(names) > MAX_CLASSES:
        raise InputError(f"at most {MAX_CLASSES} classes fit in uint8 labels, got {len(names)}")
    if len(set(names)) != len(names):
        raise InputError(f"class names must be unique, got {names!r}")
    return tuple(names)


def parse_spacing(value: str | Sequence[float] | None) -> tuple[float, float, float] | None:
    """``"2,1,1"`` or ``(2, 1, 1)`` -> ``(2.0, 1.0, 1.0)`` voxel spacing in (z, y, x) order."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        spacing = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise InputError(f"spacing must be three numbers Z,Y,X such as 2,1,1; got {value!r}") from None
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"spacing must be three positive finite numbers Z,Y,X such as 2,1,1; got {value!r}")
    return spacing  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class ProjectConfig:
    """What a project is: its classes, their colours, the voxel spacing and the display window.

    Examples
    --------
    >>> cfg = ProjectConfig(classes=("background", "bone"))
    >>> cfg.label_value("bone")
    2
    """

    classes: tuple[str, ...] = DEFAULT_CLASSES
    colours: tuple[str, ...] = ()
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    spacing_unit: str = "pixel"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", parse_classes(self.classes))
        colours = tuple(self.colours) or tuple(DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)] for i in range(len(self.classes)))
        if len(colours) != len(self.classes):
            raise InputError(f"{len(colours)} colours given for {len(self.classes)} classes")
        bad = [c for c in colours if not _HEX.match(c)]
        if bad:
            raise InputError(f"colours must be '#rrggbb' strings, got {bad!r}")
        object.__setattr__(self, "colours", colours)
        object.__setattr__(self, "spacing", parse_spacing(self.spacing))

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def label_value(self, name_or_index: str | int) -> int:
        """The stored label value (1-based) of a class given by name or 0-based index."""
        if isinstance(name_or_index, str):
            if name_or_index not in self.classes:
                raise InputError(f"unknown class {name_or_index!r}; the project's classes are {list(self.classes)}")
            return self.classes.index(name_or_index) + 1
        idx = int(name_or_index)
        if not 0 <= idx < self.n_classes:
            raise InputError(f"class index {idx} is outside 0..{self.n_classes - 1}")
        return idx + 1

    def with_colours(self, colours: Sequence[str]) -> "ProjectConfig":
        return replace(self, colours=tuple(colours))

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "colours": list(self.colours),
            "spacing": list(self.spacing),
            "spacing_unit": self.spacing_unit,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ProjectConfig":
        return cls(
            classes=tuple(data["classes"]),
            colours=tuple(data.get("colours", ())),
            spacing=tuple(data.get("spacing", (1.0, 1.0, 1.0))),
            spacing_unit=data.get("spacing_unit", "pixel"),
            extra=dict(data.get("extra", {})),
        )
