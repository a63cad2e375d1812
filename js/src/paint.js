// Painting and the pointer on the main canvas. The browser paints a stroke itself as the pointer moves
// (so the paint follows the pen with no kernel round trip) and sends the whole stroke on pointer-up as one
// binary message; strokes sent and not yet in the kernel's labels stay painted ("pending") on top of them.
//
// Pointer events, so a mouse, a pen and a finger paint alike: the canvas captures the pointer that went
// down (a stroke goes on outside the canvas, and other fingers are ignored), and `touch-action: none` in
// the CSS keeps a finger's drag from scrolling the page. Left button / pen tip / finger: the tool;
// middle button, Shift or the pan tool: pan; right button (pen barrel button): window/level; the pen's
// eraser end erases. Wheel: zoom about the pointer.

import { AXES, otherAxes } from "./util.js";

const PEN_ERASER = 5;  // PointerEvent.button of a pen's eraser end

export function createPainter(app) {
  const { get, st, view, dbg, record, now } = app;
  const canvas = view.canvas;

  function paintValue(tool, t, p) {
    if (tool === "eraser") return 0;
    if (tool === "accept") return t.pred ? t.pred[p] : t.lab[p];
    return get("active_class");
  }

  function startStroke(e, tool) {
    const t = st.tile;  // paint on the slice that is shown
    const [H, W] = view.dims(t.axis);
    st.stroke = { tool, value: tool === "brush" ? get("active_class") : 0, axis: t.axis, index: t.index, W, H,
      seen: new Uint8Array(H * W), idx: [], last: view.toSlice(...view.eventPos(e)), pointerId: e.pointerId };
    extendStroke(e);
  }

  // the brush swept from the last position to this event's: into the stroke, and painted into the shown tile
  function extendStroke(e) {
    const t0 = now();
    const s = st.stroke; const [x1, y1] = view.toSlice(...view.eventPos(e)); const [x0, y0] = s.last; s.last = [x1, y1];
    const r = Math.max(get("brush_size") / 2, 0.5), r2 = r * r, W = s.W, H = s.H;
    const t = st.tile && st.tile.axis === s.axis && st.tile.index === s.index ? st.tile : null;
    let di0 = Infinity, di1 = -1, dj0 = Infinity, dj1 = -1;
    const add = (row, col) => {
      const p = row * W + col;
      if (s.seen[p]) return;
      s.seen[p] = 1; s.idx.push(p);
      if (!t) return;
      const ri = row - t.r0, cj = col - t.c0;
      if (ri < 0 || cj < 0 || ri % t.step || cj % t.step) return;
      const i = ri / t.step, j = cj / t.step;
      if (i >= t.h || j >= t.w) return;
      const tp = i * t.w + j;
      t.lab[tp] = paintValue(s.tool, t, tp);
      if (i < di0) di0 = i; if (i > di1) di1 = i; if (j < dj0) dj0 = j; if (j > dj1) dj1 = j;
    };
    const rmin = Math.max(0, Math.floor(Math.min(y0, y1) - r)), rmax = Math.min(H - 1, Math.ceil(Math.max(y0, y1) + r));
    const cmin = Math.max(0, Math.floor(Math.min(x0, x1) - r)), cmax = Math.min(W - 1, Math.ceil(Math.max(x0, x1) + r));
    const dx = x1 - x0, dy = y1 - y0, L2 = dx * dx + dy * dy;
    for (let row = rmin; row <= rmax; row++) {
      const py = row + 0.5;
      for (let col = cmin; col <= cmax; col++) {
        const px = col + 0.5;
        let u = L2 > 0 ? ((px - x0) * dx + (py - y0) * dy) / L2 : 0; u = u < 0 ? 0 : u > 1 ? 1 : u;
        const ex = x0 + u * dx - px, ey = y0 + u * dy - py;
        if (ex * ex + ey * ey <= r2) add(row, col);
      }
    }
    const er = Math.floor(y1), ec = Math.floor(x1);
    if (er >= 0 && er < H && ec >= 0 && ec < W) add(er, ec);
    if (di1 >= 0) view.compose(di0, di1 + 1, dj0, dj1 + 1);
    view.present();
    record("paint", now() - t0);
    if (dbg.measurePaint && st.mouse) {  // benchmarks: force the raster, time from the input event
      const t1 = now();
      view.readPixel(st.mouse[0], st.mouse[1]);
      const t2 = now();
      record("painted", t2 - e.timeStamp); record("queued", t0 - e.timeStamp); record("raster", t2 - t1);
    }
  }

  function endStroke() {
    const s = st.stroke; st.stroke = null;
    if (!s || !s.idx.length) return;
    const seq = ++st.seq;
    const idx = Uint32Array.from(s.idx);
    st.pending.push({ seq, axis: s.axis, index: s.index, tool: s.tool, value: s.value, idx, W: s.W });
    st.upTimes.set(seq, now());
    app.root.dataset.pending = String(st.pending.length);
    app.channel.sendStroke(seq, s, idx);
  }

  // the kernel has handled this client's strokes up to `applied`: they are in its labels now
  function dropPending(applied) {
    if (applied === undefined || applied === null) return;
    st.pending = st.pending.filter((p) => p.seq > applied);
    app.root.dataset.pending = String(st.pending.length);
  }

  // paint the strokes the kernel's labels do not hold yet (and the one being drawn) into the shown tile
  function reapplyPending() {
    const t = st.tile; if (!t) return;
    const s = st.stroke;  // the stroke being drawn is not sent yet: keep it visible too
    const all = s ? [...st.pending, { axis: s.axis, index: s.index, tool: s.tool, value: s.value, idx: s.idx, W: s.W }] : st.pending;
    for (const p of all) {
      if (p.axis !== t.axis || p.index !== t.index) continue;
      for (const q of p.idx) {
        const row = Math.floor(q / p.W), col = q - row * p.W;
        const ri = row - t.r0, cj = col - t.c0;
        if (ri < 0 || cj < 0 || ri % t.step || cj % t.step) continue;
        const i = ri / t.step, j = cj / t.step;
        if (i < t.h && j < t.w) { const tp = i * t.w + j; t.lab[tp] = p.tool === "brush" ? p.value : paintValue(p.tool, t, tp); }
      }
    }
  }

  function setCursorFromMain(pos) {
    const [x, y] = view.toSlice(...pos); const [H, W] = view.dims();
    const k = AXES.indexOf(st.axis), other = otherAxes(k);
    const cur = (get("cursor") || [0, 0, 0]).slice();
    cur[k] = st.index; cur[other[0]] = Math.max(0, Math.min(H - 1, Math.floor(y))); cur[other[1]] = Math.max(0, Math.min(W - 1, Math.floor(x)));
    app.channel.send({ type: "cursor", z: cur[0], y: cur[1], x: cur[2] });
  }

  // ------------------------------------------------------------------ pointer events
  let active = null;  // the pointerId of the stroke or drag in progress; other pointers (a second finger) are ignored
  const capture = (e) => {
    active = e.pointerId;
    try { canvas.setPointerCapture(e.pointerId); } catch { /* a synthetic event's pointer cannot be captured */ }
  };

  const onDown = (e) => {
    if (active !== null && e.pointerId !== active) return;
    app.root.focus({ preventScroll: true });
    if (!st.tile) return;
    const pos = view.eventPos(e);
    st.mouse = pos;
    const tool = get("tool");
    if (e.button === 2) { capture(e); st.drag = { kind: "wl", x: pos[0], y: pos[1], win: st.window.slice() }; return; }
    if (e.button === 1 || e.shiftKey || tool === "pan") { capture(e); st.drag = { kind: "pan", x: pos[0], y: pos[1], moved: false }; return; }
    if (e.pointerType === "pen" && e.button === PEN_ERASER) { capture(e); startStroke(e, "eraser"); return; }
    if (e.button !== 0) return;
    if (tool === "fill") {
      const [x, y] = view.toSlice(...pos); const [H, W] = view.dims();
      const row = Math.floor(y), col = Math.floor(x);
      if (row < 0 || col < 0 || row >= H || col >= W) return;
      app.channel.send({ type: "fill", seq: ++st.seq, axis: st.axis, index: st.index, row, col, value: get("active_class") });
      return;
    }
    if (!app.isStrokeTool(tool)) return;
    capture(e);
    startStroke(e, tool);
  };

  const onMove = (e) => {
    if (active !== null && e.pointerId !== active) return;
    const pos = view.eventPos(e);
    const r = canvas.getBoundingClientRect();
    const inside = e.clientX >= r.left && e.clientX < r.right && e.clientY >= r.top && e.clientY < r.bottom;
    st.mouse = inside || st.stroke ? pos : null;
    // while painting: the stroke follows pointerrawupdate where there is one (below); no status text per move
    // (a DOM change per move costs a style/layout pass that delays the next input event)
    // (touch may have no raw updates: then the stroke follows pointermove)
    if (st.stroke) { if (!RAW || !st.stroke.raw) extendStroke(e); return; }
    if (st.drag) {
      const d = st.drag, dx = pos[0] - d.x, dy = pos[1] - d.y;
      if (d.kind === "pan") {
        d.moved = d.moved || Math.abs(dx) + Math.abs(dy) > 3;
        st.view.cx -= dx / st.view.zoom; st.view.cy -= dy / st.view.zoom; d.x = pos[0]; d.y = pos[1];
        view.present(); app.scheduleView();
      } else {
        const w0 = d.win[1] - d.win[0], c0 = (d.win[0] + d.win[1]) / 2;
        const w = Math.max(w0 * Math.exp(dx * 0.005), 1e-9), c = c0 - dy * w0 * 0.003;
        app.setWindow([c - w / 2, c + w / 2], false);
      }
      return;
    }
    if (inside) view.present();
  };

  const onUp = (e) => {
    if (e.pointerId !== active) return;
    active = null;
    if (st.stroke) {
      if (e.type !== "pointercancel") extendStroke(e);
      endStroke(); view.present(); view.updateStatus(st.mouse);
      app.flushOverlays();  // overlays that came during the stroke
    } else if (st.drag) {
      const d = st.drag; st.drag = null;
      if (d.kind === "wl") app.setWindow(st.window.slice(), true);
      else if (!d.moved && get("tool") === "pan") setCursorFromMain(view.eventPos(e));
      else app.requestView();
    }
    if (e.pointerType !== "mouse") { st.mouse = null; view.present(); }  // a lifted pen or finger hovers nowhere
  };

  // pointerrawupdate is dispatched as soon as the input arrives; pointermove waits for the next animation
  // frame (measured here: input -> handler p95 15 ms with mousemove). Painting follows the raw events.
  const RAW = "onpointerrawupdate" in window && window.isSecureContext;
  const onRaw = (e) => {
    if (!st.stroke || e.pointerId !== st.stroke.pointerId) return;
    st.stroke.raw = true;
    st.mouse = view.eventPos(e);
    extendStroke(e);
  };

  const onWheel = (e) => {
    if (!st.view) return;
    e.preventDefault(); e.stopPropagation();
    const pos = view.eventPos(e); const [sx, sy] = view.toSlice(...pos);
    const [H, W] = view.dims(); const S = view.S(), fit = Math.min(S / W, S / H);
    const z = Math.min(64, Math.max(fit / 4, st.view.zoom * Math.exp(-e.deltaY * 0.0015)));
    st.view.zoom = z; st.view.cx = sx - (pos[0] - S / 2) / z; st.view.cy = sy - (pos[1] - S / 2) / z;
    view.present(); app.scheduleView();
  };

  const listeners = [
    [canvas, "contextmenu", (e) => { e.preventDefault(); e.stopPropagation(); }],
    // the mouse events that follow a pointerdown still reach the host app (JupyterLab selects the cell on
    // mousedown); their default (focus the canvas, start a text selection or an image drag) does not happen
    [canvas, "mousedown", (e) => e.preventDefault()],
    [canvas, "pointerdown", onDown],
    [canvas, "pointermove", onMove],
    [canvas, "pointerup", onUp],
    [canvas, "pointercancel", onUp],
    [canvas, "pointerleave", () => { if (active === null) { st.mouse = null; view.present(); } }],
    [canvas, "wheel", onWheel, { passive: false }],
    [canvas, "dblclick", () => { if (get("tool") === "pan") { view.fitView(); app.requestView(); } }],
  ];
  if (RAW) listeners.push([window, "pointerrawupdate", onRaw]);
  for (const [target, type, fn, opts] of listeners) target.addEventListener(type, fn, opts);

  return {
    dropPending,
    reapplyPending,
    detach: () => { for (const [target, type, fn, opts] of listeners) target.removeEventListener(type, fn, opts); },
  };
}
