"""Write a benchmark's figures into docs/BENCHMARKS.md, in a section of its own, with the command."""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

__all__ = ["machine_line", "write_section"]


def machine_line() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{os.cpu_count()} cores ({cpu}){gpu}, Python {platform.python_version()}"


def write_section(md_path: str | os.PathLike, key: str, title: str, body: str, command: str) -> None:
    """Replace (or append) the section between ``<!-- key:start -->`` and ``<!-- key:end -->``."""
    md_path = Path(md_path)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = (
        f"<!-- {key}:start -->\n## {title}\n\n"
        f"Command: `{command}`  \nMeasured {stamp} on {machine_line()}.\n\n{body.strip()}\n<!-- {key}:end -->"
    )
    text = md_path.read_text() if md_path.exists() else "# Benchmarks\n\nEvery figure here was written by the script named with it.\n"
    pattern = re.compile(rf"<!-- {re.escape(key)}:start -->.*?<!-- {re.escape(key)}:end -->", re.S)
    text = pattern.sub(lambda _m: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(text)
