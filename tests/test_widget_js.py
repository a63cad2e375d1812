"""The widget's browser half as source: the committed bundle is what ``js/src`` builds to, the tool
list reaches the browser from Python only, and ``protocol.js`` keeps one view request in flight.

``al_annotator/jupyter/static/annotator.js`` (what anywidget serves) is esbuild's bundle of
``js/src/*.js``. The build checks need ``node`` and ``npm install`` in ``js/`` (esbuild ships its
binary inside the npm package); without them they are skipped, with the reason. The behaviour in a
real browser is in ``tests/zz_e2e``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from al_annotator.jupyter import _protocol as P

REPO = Path(__file__).resolve().parents[1]
JS = REPO / "js"
BUNDLE = REPO / "al_annotator" / "jupyter" / "static" / "annotator.js"
NODE = shutil.which("node")


def _needs_esbuild():
    if NODE is None:
        pytest.skip("needs node (apt-get install -y nodejs) to rebuild the widget's bundle")
    if not (JS / "node_modules" / "esbuild" / "package.json").exists():
        pytest.skip("needs esbuild: run `npm ci` in js/ (the pinned version from js/package-lock.json)")


def test_the_committed_bundle_is_what_js_src_builds_to(tmp_path):
    _needs_esbuild()
    out = tmp_path / "annotator.js"
    subprocess.run([NODE, str(JS / "build.mjs"), str(out)], check=True, cwd=JS, timeout=120)
    assert out.read_bytes() == BUNDLE.read_bytes(), "annotator.js is stale: run `npm run build` in js/ and commit it"


def test_the_bundle_is_built_from_every_module_and_pinned():
    text = BUNDLE.read_text()
    for module in sorted((JS / "src").glob("*.js")):
        assert f"// src/{module.name}" in text, f"{module.name} is not in the bundle"
    pinned = json.loads((JS / "package.json").read_text())["devDependencies"]["esbuild"]
    assert pinned[0].isdigit(), f"esbuild must be pinned to one version (byte-identical rebuilds), got {pinned!r}"
    locked = json.loads((JS / "package-lock.json").read_text())["packages"]["node_modules/esbuild"]["version"]
    assert locked == pinned


def test_the_tool_list_is_written_once_in_python():
    sources = "\n".join(p.read_text() for p in sorted((JS / "src").glob("*.js")))
    for tool in P.TOOLS:
        assert tool.tooltip not in sources and tool.tooltip not in BUNDLE.read_text(), f"{tool.name}'s tooltip is in the JS too"
    assert P.STROKE_TOOLS == ("brush", "eraser", "accept")
    assert len({t.key.lower() for t in P.TOOLS}) == len(P.TOOLS), "two tools share a shortcut key"
    assert not any(t.key in "0123456789[] " for t in P.TOOLS), "a tool key would shadow a class or brush-size key"


def test_the_browser_gets_the_tool_table_in_the_first_state(tmp_path, monkeypatch):
    pytest.importorskip("anywidget")
    import comm

    from al_annotator import make_phantom
    from al_annotator.jupyter import Annotator
    from al_annotator.store import create_project

    opened: list[dict] = []

    class Comm:
        kernel = None
        comm_id = "c"

        def __init__(self, **kwargs):
            opened.append(kwargs)

        def on_msg(self, callback):
            pass

        def send(self, *args, **kwargs):
            pass

        def close(self, *args, **kwargs):
            pass

    monkeypatch.setattr(comm, "create_comm", lambda **kw: Comm(**kw))
    create_project(tmp_path / "p", make_phantom((8, 16, 16), seed=0).image, classes=("bg", "a")).close()
    w = Annotator(tmp_path / "p", poll_interval=None)
    try:
        state = next(o["data"]["state"] for o in opened if "_esm" in o["data"]["state"])  # not its Layout
        assert state["tools"] == P.tool_table()
        assert [t["name"] for t in state["tools"]] == ["brush", "eraser", "fill", "accept", "pan"]
        w.tool = "pan"
        assert w.tool == "pan"
        w.tool = "spray"  # not in TOOLS: the widget falls back to the brush
        assert w.tool == "brush"
    finally:
        w.close()


PROTOCOL_PROBE = """
import { createViewRequests, decodeTile, sameTile } from "./src/protocol.js";
const sent = []; let t = 0;
const r = createViewRequests((m) => sent.push(m), () => t);
const region = (index) => ({ axis: "z", index, r0: 0, r1: 4, c0: 0, c1: 4, step: 1 });
r.want(region(1)); r.want(region(2)); r.want(region(3));       // scrolling: one goes out, the newest waits
const out1 = sent.length, stale = r.answered(99), mine = r.answered(1);
r.pump();                                                        // the answer came: the newest wanted goes out
const out2 = sent.map((m) => [m.req, m.index]);
r.want(region(4)); t = 25000; r.want(region(5));                 // a request lost for 20 s no longer blocks
const dv = (a) => new DataView(a.buffer);
const msg = { axis: "z", index: 0, r0: 0, r1: 2, c0: 0, c1: 2, step: 1, h: 2, w: 2, layers: ["image", "labels"],
  image: { dtype: "u16", qlo: 0, qscale: 1 } };
const odd = new Uint8Array(9); odd.set([1, 0, 2, 0, 3, 0, 4, 0], 1);  // uint16 codes at an odd offset
const tile = decodeTile(msg, [new DataView(odd.buffer, 1, 8), dv(new Uint8Array([0, 1, 0, 2]))]);
const bad = decodeTile({ ...msg, h: 3 }, [dv(new Uint16Array(4)), dv(new Uint8Array(4))]);
console.log(JSON.stringify({ out1, stale, mine: mine && mine.index, out2, last: sent.at(-1).index, reqs: sent.map((m) => m.req),
  img: Array.from(tile.img), lab: Array.from(tile.lab), same: sameTile(tile, msg), other: sameTile(tile, { ...msg, index: 1 }), bad }));
"""


def test_protocol_js_keeps_one_view_request_in_flight_and_decodes_tiles():
    if NODE is None:
        pytest.skip("needs node (apt-get install -y nodejs)")
    run = subprocess.run([NODE, "--input-type=module", "-e", PROTOCOL_PROBE], cwd=JS, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["out1"] == 1 and got["stale"] is None and got["mine"] == 1
    assert got["out2"] == [[1, 1], [2, 3]]  # index 2 was superseded before it was sent
    assert got["last"] == 5 and got["reqs"] == [1, 2, 3]
    assert got["img"] == [1, 2, 3, 4] and got["lab"] == [0, 1, 0, 2]
    assert got["same"] is True and got["other"] is False
    assert "3x2 tile with 4 pixels" in got["bad"]
