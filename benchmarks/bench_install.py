"""How heavy each install is: distributions and installed megabytes per extra, and the core's import time.

The sizes are those of the distributions each extra resolves to in this environment
(``al_annotator.extras.requirement_closure``; each file's size from its RECORD, else on disk), so
they are what a fresh ``pip install "al-annotator[EXTRA]"`` puts on disk here, wheels of this
platform. The import time is ``import al_annotator.cli`` + building the parser in a new interpreter
(median of 5), the cost every command pays before it does anything.

    python benchmarks/bench_install.py --write-md docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section  # noqa: E402

from al_annotator.extras import requirement_closure  # noqa: E402

SETS = {"core": set(), "train": {"train"}, "jupyter": {"jupyter"}, "napari": {"napari"}, "cluster": {"cluster"},
        "demo": {"demo"}, "all": {"all"}, "dev": {"dev"}}


def installed_bytes(name: str) -> int:
    dist = metadata.distribution(name)
    total = 0
    for f in dist.files or ():
        if f.size is not None:
            total += int(f.size)
        else:
            p = Path(dist.locate_file(f))
            total += p.stat().st_size if p.is_file() else 0
    return total


def import_seconds(code: str, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write-md", help="write the figures into this markdown file (docs/BENCHMARKS.md)")
    args = p.parse_args(argv)
    rows = ["| install | distributions | installed MB | the largest |", "| --- | ---: | ---: | --- |"]
    for label, extras in SETS.items():
        names = requirement_closure(extras)
        sizes = {n: installed_bytes(n) for n in names}
        top = ", ".join(f"{n} {s / 2**20:.0f}" for n, s in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
        spec = "al-annotator" if not extras else f"al-annotator[{','.join(sorted(extras))}]"
        rows.append(f"| `{spec}` | {len(names)} | {sum(sizes.values()) / 2**20:.0f} | {top} |")
        print(rows[-1])
    baseline = import_seconds("pass")
    cli = import_seconds("import al_annotator.cli as c; c.build_parser()")
    rows.append("")
    rows.append(f"`import al_annotator.cli` and building the parser: {cli:.2f} s in a new interpreter "
                f"({cli - baseline:.2f} s over an empty one), median of 5; no torch, Jupyter or Qt is imported.")
    print(rows[-1])
    if args.write_md:
        write_section(args.write_md, "bench_install", "Install size per extra (issue #13)", "\n".join(rows),
                      "python benchmarks/bench_install.py --write-md docs/BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
