// al_annotator notebook widget: the browser half of al_annotator.jupyter.Annotator.
// Plain ES module for anywidget (no build step). The browser paints strokes itself and sends each
// whole stroke to the kernel on mouse-up as one binary message; the kernel stores it and sends the
// authoritative labels back. The message protocol is documented in al_annotator/jupyter/_protocol.py.

const AXES = ["z", "y", "x"];
const HEAT_STOPS = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
const TOOLS = [
  ["brush", "Brush", "B", "paint the active class"],
  ["eraser", "Eraser", "E", "erase labels (0 also picks it)"],
  ["fill", "Fill", "F", "flood-fill the clicked region with the active class (in the kernel)"],
  ["accept", "Accept", "A", "copy the prediction into the labels inside the brush"],
  ["pan", "Pan", "H", "drag to pan; click to move the crosshair"],
];

function heatTable() {
  const t = new Uint8Array(256 * 3);
  for (let u = 0; u < 256; u++) {
    const f = (u / 255) * (HEAT_STOPS.length - 1), k = Math.min(HEAT_STOPS.length - 2, Math.floor(f)), a = f - k;
    for (let c = 0; c < 3; c++) t[u * 3 + c] = Math.round(HEAT_STOPS[k][c] * (1 - a) + HEAT_STOPS[k + 1][c] * a);
  }
  return t;
}
const HEAT = heatTable();

function hexRgb(hex) {
  const n = parseInt(String(hex).slice(1), 16);
  return Number.isFinite(n) ? [(n >> 16) & 255, (n >> 8) & 255, n & 255] : [255, 0, 255];
}

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// a DataView from the comm -> a typed array (each message has buffers of its own, so a view is ours to
// modify; uint16 needs an even offset, else it is copied)
function u8(dv) { return new Uint8Array(dv.buffer, dv.byteOffset, dv.byteLength); }
function codes(dv, kind) {
  if (kind === "u8") return u8(dv);
  if (dv.byteOffset % 2 === 0) return new Uint16Array(dv.buffer, dv.byteOffset, dv.byteLength / 2);
  return new Uint16Array(dv.buffer.slice(dv.byteOffset, dv.byteOffset + dv.byteLength));
}

function fmt(x, d = 3) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "–";
  return Math.abs(x) >= 1000 ? x.toFixed(0) : Number(x.toPrecision(d)).toString();
}

function render({ model, el }) {
  const client = Math.random().toString(36).slice(2, 10);
  const dbg = (globalThis.__alAnnotator ||= { timings: { paint: [], painted: [], queued: [], raster: [], slice: [], ack: [], wl: [], ping: [], install: [] }, widgets: [], measurePaint: false });
  const record = (name, ms) => { const a = (dbg.timings[name] ||= []); a.push(ms); if (a.length > 2000) a.shift(); };
  const now = () => performance.now();
  const get = (k) => model.get(k);
  const setTrait = (k, v) => { model.set(k, v); model.save_changes(); };
  const send = (content, buffers) => model.send({ client, ...content }, undefined, buffers || []);

  // ------------------------------------------------------------------ state
  const st = {
    axis: get("axis"), index: get("index"),
    view: null,            // {zoom (CSS px per slice px), cx, cy (slice coords at the canvas centre)}
    tile: null,            // what the kernel sent: region, step, image codes, labels, prediction, confidence
    lut: null, lutKey: "",
    colours: new Uint8Array(256 * 3),
    overlays: true,        // Space toggles
    req: 0, inflight: null, wanted: null,
    seq: 0, pending: [],   // strokes sent, not yet in a labels message from the kernel
    upTimes: new Map(),    // stroke seq -> mouse-up time (for the ack latency)
    stroke: null, drag: null, mouse: null,
    ortho: null, thumbs: new Map(),
    window: (get("window") || []).slice(),
    wlTimer: null, viewTimer: null,
  };

  // ------------------------------------------------------------------ DOM
  const S = () => get("canvas_size");
  const canvas = h("canvas", { class: "al-canvas", tabindex: "-1" });
  const ctx = canvas.getContext("2d");
  const off = document.createElement("canvas");
  const offCtx = off.getContext("2d");
  const status = h("div", { class: "al-status" });
  const msgBox = h("div", { class: "al-msg", hidden: true });

  const axisBtns = AXES.map((a) => h("button", { class: "al-axis", "data-axis": a, title: `show ${a} slices`, text: a,
    onclick: () => switchAxis(a) }));
  const slider = h("input", { type: "range", class: "al-slider", min: 0, step: 1,
    oninput: () => navigate(st.axis, +slider.value) });
  const indexBox = h("input", { type: "number", class: "al-indexbox", min: 0, step: 1,
    onchange: () => navigate(st.axis, +indexBox.value) });
  const ofLabel = h("span", { class: "al-of" });
  const stateBadge = h("span", { class: "al-badge" });
  const annotatedBtn = h("button", { class: "al-annotated", title: "commit this slice as fully annotated (the trainer trains on it) and refresh the suggestions",
    onclick: () => send({ type: "annotated", annotated: get("slice_state") !== "annotated" }) });

  const toolBtns = TOOLS.map(([name, label, key, title]) => h("button", { class: "al-tool", "data-tool": name,
    title: `${title} (${key})`, text: label, onclick: () => setTrait("tool", name) }));
  const sizeRange = h("input", { type: "range", class: "al-size", min: 1, max: 101, step: 1,
    oninput: () => setTrait("brush_size", +sizeRange.value) });
  const sizeLabel = h("span", { class: "al-sizelabel" });
  const undoBtn = h("button", { class: "al-undo", text: "↶ Undo", title: "undo your last edit (Ctrl+Z)", onclick: () => send({ type: "undo" }) });
  const redoBtn = h("button", { class: "al-redo", text: "↷ Redo", title: "redo (Ctrl+Y)", onclick: () => send({ type: "redo" }) });

  const check = (trait, label, title) => {
    const box = h("input", { type: "checkbox", "data-trait": trait, onchange: () => setTrait(trait, box.checked) });
    return [box, h("label", { class: "al-check", title }, box, label)];
  };
  const [showLab, showLabL] = check("show_labels", "Labels", "label overlay (Space hides all overlays)");
  const [showPred, showPredL] = check("show_prediction", "Prediction", "the current model's prediction");
  const [showUnc, showUncL] = check("show_uncertainty", "Uncertainty", "heat map of 1 - confidence of the current model");
  const opacity = h("input", { type: "range", class: "al-opacity", min: 0, max: 1, step: 0.05,
    oninput: () => setTrait("opacity", +opacity.value) });
  const levelR = h("input", { type: "range", class: "al-level", step: "any", oninput: () => wlFromSliders() });
  const widthR = h("input", { type: "range", class: "al-width", step: "any", oninput: () => wlFromSliders() });
  const autoBtn = h("button", { text: "Auto W/L", title: "reset window/level to the project's display window (right-drag on the image changes it)",
    onclick: () => setWindow(get("default_window").slice(), true) });

  const orthoCanvases = AXES.map((a) => h("canvas", { class: "al-ortho-view", "data-axis": a,
    title: `${a} plane through the crosshair: click to move the crosshair there, double-click to show this plane` }));
  const palette = h("div", { class: "al-palette" });
  const strategySel = h("select", { class: "al-strategy", title: "acquisition strategy",
    onchange: () => send({ type: "refresh", strategy: strategySel.value }) });
  const suggList = h("div", { class: "al-sugg-list" });
  const nextBtn = h("button", { class: "al-next", text: "Next ▶", title: "go to the best suggestion not yet annotated (N)", onclick: () => send({ type: "next" }) });
  const skipBtn = h("button", { class: "al-skip", text: "Skip", title: "drop this suggestion and go to the next", onclick: () => skip() });
  const refreshBtn = h("button", { class: "al-refresh", text: "Refresh", title: "rank the slices again with the current model",
    onclick: () => send({ type: "refresh", strategy: strategySel.value }) });
  const startBtn = h("button", { class: "al-start", text: "Start", title: "start the background trainer process", onclick: () => send({ type: "trainer", action: "start" }) });
  const stopBtn = h("button", { class: "al-stop", text: "Stop", title: "stop the trainer", onclick: () => send({ type: "trainer", action: "stop" }) });
  const trainStatus = h("div", { class: "al-train-status" });
  const progress = h("div", { class: "al-progress" }, h("div", { class: "al-progress-bar" }));
  const curve = h("canvas", { class: "al-curve" });
  const title = h("span", { class: "al-title" });

  const root = h("div", { class: "al-annotator", tabindex: "0", "data-lm-suppress-shortcuts": "true", "data-ready": "0" },
    h("div", { class: "al-bar" }, title, h("span", { class: "al-group" }, ...axisBtns), slider, indexBox, ofLabel, stateBadge, annotatedBtn),
    h("div", { class: "al-bar" }, h("span", { class: "al-group" }, ...toolBtns),
      h("label", { class: "al-field", title: "brush diameter in image pixels ([ and ])" }, "Size", sizeRange, sizeLabel),
      undoBtn, redoBtn),
    h("div", { class: "al-bar" }, showLabL, showPredL, showUncL,
      h("label", { class: "al-field" }, "Opacity", opacity),
      h("label", { class: "al-field", title: "window level (centre)" }, "L", levelR),
      h("label", { class: "al-field", title: "window width" }, "W", widthR), autoBtn),
    h("div", { class: "al-body" },
      h("div", { class: "al-stage" }, canvas, status),
      h("div", { class: "al-side" },
        h("div", { class: "al-section" }, h("div", { class: "al-h" }, "Planes"), h("div", { class: "al-ortho" }, ...orthoCanvases)),
        h("div", { class: "al-section" }, h("div", { class: "al-h" }, "Classes"), palette),
        h("div", { class: "al-section" }, h("div", { class: "al-h" }, "Suggestions", strategySel, refreshBtn), suggList,
          h("div", { class: "al-row" }, nextBtn, skipBtn)),
        h("div", { class: "al-section" }, h("div", { class: "al-h" }, "Training", startBtn, stopBtn), trainStatus, progress, curve))),
    msgBox);
  el.append(root);
  dbg.widgets.push({ client, root, st, sendRaw: send, navigate: (a, i) => navigate(a, i), ping: () => send({ type: "ping", t: now(), te: performance.timeOrigin + now() }) });  // for tests and benchmarks

  // ------------------------------------------------------------------ geometry
  const dims = (axis = st.axis) => { const s = get("shape"); const k = AXES.indexOf(axis); return s.filter((_, i) => i !== k); };
  const fitView = () => {
    const [H, W] = dims(); const s = S();
    st.view = { zoom: Math.min(s / W, s / H), cx: W / 2, cy: H / 2 };
  };
  const toSlice = (px, py) => { const v = st.view, s = S(); return [v.cx + (px - s / 2) / v.zoom, v.cy + (py - s / 2) / v.zoom]; };
  const toScreen = (x, y) => { const v = st.view, s = S(); return [(x - v.cx) * v.zoom + s / 2, (y - v.cy) * v.zoom + s / 2]; };
  const eventPos = (e) => { const r = canvas.getBoundingClientRect(); return [(e.clientX - r.left) * S() / r.width, (e.clientY - r.top) * S() / r.height]; };

  function sizeCanvas() {
    const s = S(), dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(s * dpr); canvas.height = Math.round(s * dpr);
    canvas.style.width = canvas.style.height = `${s}px`;
    status.style.width = `${s}px`;
  }

  // the region and step the current view needs (step: the coarsest that still has >= 1 sample per device pixel)
  function neededRegion() {
    const [H, W] = dims(); const v = st.view, s = S(), dpr = window.devicePixelRatio || 1;
    const step = Math.max(1, Math.floor(1 / (v.zoom * dpr)));
    const half = s / 2 / v.zoom;
    let r0 = v.cy - half, r1 = v.cy + half, c0 = v.cx - half, c1 = v.cx + half;
    const mr = (r1 - r0) * 0.25, mc = (c1 - c0) * 0.25;
    const vis = { r0: Math.max(0, Math.floor(r0)), r1: Math.min(H, Math.ceil(r1)), c0: Math.max(0, Math.floor(c0)), c1: Math.min(W, Math.ceil(c1)) };
    r0 = Math.max(0, Math.floor((r0 - mr) / step) * step); c0 = Math.max(0, Math.floor((c0 - mc) / step) * step);
    r1 = Math.min(H, Math.ceil(r1 + mr)); c1 = Math.min(W, Math.ceil(c1 + mc));
    if (r1 <= r0) { r0 = 0; r1 = H; } if (c1 <= c0) { c0 = 0; c1 = W; }
    return { vis, req: { r0, r1, c0, c1, step } };
  }

  function requestView(force = false) {
    if (!st.view) fitView();
    const { vis, req } = neededRegion();
    const t = st.tile;
    const covered = t && t.axis === st.axis && t.index === st.index && t.step <= req.step && t.step * 4 > req.step &&
      t.r0 <= vis.r0 && t.r1 >= vis.r1 && t.c0 <= vis.c0 && t.c1 >= vis.c1;
    present();
    if (covered && !force) return;
    st.wanted = { axis: st.axis, index: st.index, ...req, t0: now() };
    pump();
  }

  function pump() {
    if (st.inflight && now() - st.inflight.t0 < 20000) return;
    if (!st.wanted) return;
    const w = st.wanted; st.wanted = null;
    st.inflight = { ...w, req: ++st.req };
    send({ type: "view", req: st.inflight.req, axis: w.axis, index: w.index, r0: w.r0, r1: w.r1, c0: w.c0, c1: w.c1, step: w.step });
  }

  function navigate(axis, index, keepView = true) {
    const n = get("shape")[AXES.indexOf(axis)];
    index = Math.max(0, Math.min(n - 1, Math.round(index)));
    if (!Number.isFinite(index)) return;
    const axisChanged = axis !== st.axis;
    st.axis = axis; st.index = index;
    if (axisChanged || !keepView || !st.view) fitView();
    syncSliceUI();
    requestView(true);
  }

  function switchAxis(a) {
    if (a === st.axis) return;
    const cur = get("cursor") || [];
    navigate(a, cur[AXES.indexOf(a)] ?? Math.floor(get("shape")[AXES.indexOf(a)] / 2), false);
  }

  // ------------------------------------------------------------------ colours and window/level
  function rebuildColours() {
    st.colours.fill(0);
    for (const c of get("classes")) { const [r, g, b] = hexRgb(c.colour); st.colours.set([r, g, b], c.value * 3); }
  }

  function rebuildLut(kind, qlo, qscale) {
    const [lo, hi] = st.window;
    const key = `${kind}|${qlo}|${qscale}|${lo}|${hi}`;
    if (st.lutKey === key) return;
    const n = kind === "u8" ? 256 : 65536, lut = new Uint8Array(n), s = 255 / Math.max(hi - lo, 1e-12);
    for (let q = 0; q < n; q++) { const g = (qlo + q * qscale - lo) * s; lut[q] = g <= 0 ? 0 : g >= 255 ? 255 : g; }
    st.lut = lut; st.lutKey = key;
  }

  function setWindow(win, save) {
    if (!(win[1] > win[0])) return;
    const t0 = now();
    st.window = win;
    syncWindowUI();
    if (st.tile) { rebuildLut(st.tile.kind, st.tile.qlo, st.tile.qscale); compose(); present(); }
    drawOrtho();
    record("wl", now() - t0);
    clearTimeout(st.wlTimer);
    if (save) st.wlTimer = setTimeout(() => setTrait("window", st.window.slice()), 150);
  }

  function wlFromSliders() {
    const level = +levelR.value, width = Math.max(+widthR.value, 1e-9);
    setWindow([level - width / 2, level + width / 2], true);
  }

  // ------------------------------------------------------------------ drawing
  function installTile(msg, buffers) {
    const t0 = now();
    const layers = msg.layers || [];
    const at = (name) => { const k = layers.indexOf(name); return k >= 0 ? buffers[k] : null; };
    const n = msg.h * msg.w;
    const t = {
      axis: msg.axis, index: msg.index, r0: msg.r0, r1: msg.r1, c0: msg.c0, c1: msg.c1, step: msg.step, h: msg.h, w: msg.w,
      kind: msg.image.dtype, qlo: msg.image.qlo, qscale: msg.image.qscale,
      img: codes(at("image"), msg.image.dtype), lab: u8(at("labels")),
      pred: at("prediction") ? u8(at("prediction")) : null, conf: at("confidence") ? u8(at("confidence")) : null,
    };
    if (t.img.length !== n || t.lab.length !== n) { showError(`the kernel sent a ${msg.h}x${msg.w} tile with ${t.img.length} pixels`); return false; }
    st.tile = t;
    off.width = t.w; off.height = t.h;
    st.imgData = offCtx.createImageData(t.w, t.h);
    dropPending(msg.applied); reapplyPending();
    rebuildLut(t.kind, t.qlo, t.qscale);
    compose(); present();
    root.dataset.axis = t.axis; root.dataset.index = String(t.index); root.dataset.ready = "1";
    root.dataset.step = String(t.step);
    record("install", now() - t0);
    return true;
  }

  function compose(i0 = 0, i1 = st.tile.h, j0 = 0, j1 = st.tile.w) {
    const t = st.tile; if (!t) return;
    const d = st.imgData.data, lut = st.lut, col = st.colours, w = t.w;
    const { img, lab, pred, conf } = t;
    const on = st.overlays, a = get("opacity");
    const showL = on && get("show_labels") && a > 0, showP = on && get("show_prediction") && pred, showU = on && get("show_uncertainty") && conf;
    const ap = a * 0.7;
    for (let i = i0; i < i1; i++) {
      let p = i * w + j0, q = p * 4;
      for (let j = j0; j < j1; j++, p++, q += 4) {
        let r = lut[img[p]], g = r, b = r;
        if (showP) { const v = pred[p]; if (v) { const k = v * 3; r += (col[k] - r) * ap; g += (col[k + 1] - g) * ap; b += (col[k + 2] - b) * ap; } }
        if (showU) { const u = 255 - conf[p]; if (u) { const k = u * 3, au = u * (0.75 / 255); r += (HEAT[k] - r) * au; g += (HEAT[k + 1] - g) * au; b += (HEAT[k + 2] - b) * au; } }
        if (showL) { const v = lab[p]; if (v) { const k = v * 3; r += (col[k] - r) * a; g += (col[k + 1] - g) * a; b += (col[k + 2] - b) * a; } }
        d[q] = r; d[q + 1] = g; d[q + 2] = b; d[q + 3] = 255;
      }
    }
    offCtx.putImageData(st.imgData, 0, 0, j0, i0, j1 - j0, i1 - i0);
  }

  function present() {
    const s = S(), dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#15171a"; ctx.fillRect(0, 0, s, s);
    if (!st.view) return;
    const [H, W] = dims(); const z = st.view.zoom;
    const [bx, by] = toScreen(0, 0);
    const t = st.tile;
    if (t && t.axis === st.axis) {  // the last tile of this axis until the requested one arrives
      ctx.save(); ctx.beginPath(); ctx.rect(bx, by, W * z, H * z); ctx.clip();
      ctx.imageSmoothingEnabled = false;
      const [x, y] = toScreen(t.c0, t.r0);
      ctx.drawImage(off, 0, 0, t.w, t.h, x, y, t.w * t.step * z, t.h * t.step * z);
      ctx.restore();
    }
    ctx.strokeStyle = "rgba(255,255,255,0.35)"; ctx.lineWidth = 1; ctx.strokeRect(bx - 0.5, by - 0.5, W * z + 1, H * z + 1);
    if (!st.stroke) updateStatus(st.mouse);
    // crosshair position on this slice
    const cur = get("cursor") || [];
    const k = AXES.indexOf(st.axis), other = [0, 1, 2].filter((i) => i !== k);
    if (cur.length === 3) {
      const [cx, cy] = toScreen(cur[other[1]] + 0.5, cur[other[0]] + 0.5);
      ctx.strokeStyle = "rgba(0,255,255,0.8)"; ctx.beginPath();
      ctx.moveTo(cx - 6, cy); ctx.lineTo(cx - 2, cy); ctx.moveTo(cx + 2, cy); ctx.lineTo(cx + 6, cy);
      ctx.moveTo(cx, cy - 6); ctx.lineTo(cx, cy - 2); ctx.moveTo(cx, cy + 2); ctx.lineTo(cx, cy + 6); ctx.stroke();
    }
    // brush outline under the mouse
    const tool = get("tool");
    if (st.mouse && (tool === "brush" || tool === "eraser" || tool === "accept")) {
      const [mx, my] = st.mouse;
      ctx.beginPath(); ctx.arc(mx, my, Math.max(1, get("brush_size") / 2 * z), 0, 2 * Math.PI);
      ctx.strokeStyle = tool === "eraser" ? "rgba(255,255,255,0.9)" : `rgb(${classRgb(get("active_class")).join(",")})`;
      ctx.stroke();
    }
  }

  function classRgb(v) { return [st.colours[v * 3], st.colours[v * 3 + 1], st.colours[v * 3 + 2]]; }

  // ------------------------------------------------------------------ painting (client-side)
  function paintValue(tool, t, p) {
    if (tool === "eraser") return 0;
    if (tool === "accept") return t.pred ? t.pred[p] : t.lab[p];
    return get("active_class");
  }

  function startStroke(e) {
    const tool = get("tool"), t = st.tile;  // paint on the slice that is shown
    const [H, W] = dims(t.axis);
    st.stroke = { tool, value: tool === "brush" ? get("active_class") : 0, axis: t.axis, index: t.index, W, H,
      seen: new Uint8Array(H * W), idx: [], last: toSlice(...eventPos(e)) };
    extendStroke(e);
  }

  function extendStroke(e) {
    const t0 = now();
    const s = st.stroke; const [x1, y1] = toSlice(...eventPos(e)); const [x0, y0] = s.last; s.last = [x1, y1];
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
    if (di1 >= 0) compose(di0, di1 + 1, dj0, dj1 + 1);
    present();
    record("paint", now() - t0);
    if (dbg.measurePaint && st.mouse) {  // benchmarks: force the raster, time from the input event
      const t1 = now();
      ctx.getImageData(Math.floor(st.mouse[0]), Math.floor(st.mouse[1]), 1, 1);
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
    root.dataset.pending = String(st.pending.length);
    send({ type: "stroke", seq, tool: s.tool, value: s.value, axis: s.axis, index: s.index }, [idx.buffer]);
  }

  function dropPending(applied) {
    if (applied === undefined || applied === null) return;
    st.pending = st.pending.filter((p) => p.seq > applied);
    root.dataset.pending = String(st.pending.length);
  }

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

  // ------------------------------------------------------------------ mouse and keyboard
  canvas.addEventListener("contextmenu", (e) => { e.preventDefault(); e.stopPropagation(); });
  canvas.addEventListener("mousedown", (e) => {
    e.preventDefault();
    root.focus({ preventScroll: true });
    if (!st.tile) return;
    const pos = eventPos(e);
    const tool = get("tool");
    if (e.button === 2) { st.drag = { kind: "wl", x: pos[0], y: pos[1], win: st.window.slice() }; return; }
    if (e.button === 1 || e.shiftKey || tool === "pan") { st.drag = { kind: "pan", x: pos[0], y: pos[1], moved: false }; return; }
    if (e.button !== 0) return;
    if (tool === "fill") {
      const [x, y] = toSlice(...pos); const [H, W] = dims();
      const row = Math.floor(y), col = Math.floor(x);
      if (row < 0 || col < 0 || row >= H || col >= W) return;
      send({ type: "fill", seq: ++st.seq, axis: st.axis, index: st.index, row, col, value: get("active_class") });
      return;
    }
    startStroke(e);
  });
  const onMove = (e) => {
    const pos = eventPos(e);
    const inside = e.target === canvas;
    st.mouse = inside || st.stroke ? pos : null;
    // while painting: the stroke follows pointerrawupdate where there is one (below); no status text per move
    // (a DOM change per move costs a style/layout pass that delays the next input event)
    if (st.stroke) { if (!RAW) extendStroke(e); return; }
    if (st.drag) {
      const d = st.drag, dx = pos[0] - d.x, dy = pos[1] - d.y;
      if (d.kind === "pan") {
        d.moved = d.moved || Math.abs(dx) + Math.abs(dy) > 3;
        st.view.cx -= dx / st.view.zoom; st.view.cy -= dy / st.view.zoom; d.x = pos[0]; d.y = pos[1];
        present(); scheduleView();
      } else {
        const w0 = d.win[1] - d.win[0], c0 = (d.win[0] + d.win[1]) / 2;
        const w = Math.max(w0 * Math.exp(dx * 0.005), 1e-9), c = c0 - dy * w0 * 0.003;
        setWindow([c - w / 2, c + w / 2], false);
      }
      return;
    }
    if (inside) { present(); updateStatus(pos); }
  };
  const onUp = (e) => {
    if (st.stroke) { extendStroke(e); endStroke(); present(); updateStatus(st.mouse); return; }
    if (st.drag) {
      const d = st.drag; st.drag = null;
      if (d.kind === "wl") setWindow(st.window.slice(), true);
      else if (!d.moved && get("tool") === "pan") setCursorFromMain(eventPos(e));
      else requestView();
    }
  };
  canvas.addEventListener("mousemove", onMove);
  // pointerrawupdate is dispatched as soon as the input arrives; mousemove waits for the next animation
  // frame (measured here: input -> handler p95 15 ms with mousemove). Painting follows the raw events.
  const RAW = "onpointerrawupdate" in window && window.isSecureContext;
  const onRaw = (e) => {
    if (!st.stroke) return;
    st.mouse = eventPos(e);
    extendStroke(e);
  };
  if (RAW) window.addEventListener("pointerrawupdate", onRaw);
  const onWindowMove = (e) => { if ((st.stroke || st.drag) && e.target !== canvas) onMove(e); };
  window.addEventListener("mousemove", onWindowMove);
  window.addEventListener("mouseup", onUp);
  canvas.addEventListener("mouseleave", () => { st.mouse = null; if (!st.stroke) present(); });
  canvas.addEventListener("wheel", (e) => {
    if (!st.view) return;
    e.preventDefault(); e.stopPropagation();
    const pos = eventPos(e); const [sx, sy] = toSlice(...pos);
    const [H, W] = dims(); const fit = Math.min(S() / W, S() / H);
    const z = Math.min(64, Math.max(fit / 4, st.view.zoom * Math.exp(-e.deltaY * 0.0015)));
    st.view.zoom = z; st.view.cx = sx - (pos[0] - S() / 2) / z; st.view.cy = sy - (pos[1] - S() / 2) / z;
    present(); scheduleView();
  }, { passive: false });
  canvas.addEventListener("dblclick", (e) => { if (get("tool") === "pan") { fitView(); requestView(); } });

  function scheduleView() { clearTimeout(st.viewTimer); st.viewTimer = setTimeout(() => requestView(), 60); }

  function setCursorFromMain(pos) {
    const [x, y] = toSlice(...pos); const [H, W] = dims();
    const k = AXES.indexOf(st.axis), other = [0, 1, 2].filter((i) => i !== k);
    const cur = (get("cursor") || [0, 0, 0]).slice();
    cur[k] = st.index; cur[other[0]] = Math.max(0, Math.min(H - 1, Math.floor(y))); cur[other[1]] = Math.max(0, Math.min(W - 1, Math.floor(x)));
    send({ type: "cursor", z: cur[0], y: cur[1], x: cur[2] });
  }

  root.addEventListener("keydown", (e) => {
    const tag = (e.target.tagName || "").toLowerCase();
    if ((tag === "input" && ["number", "text"].includes(e.target.type)) || tag === "select" || tag === "textarea") return;
    const k = e.key, mod = e.ctrlKey || e.metaKey;
    let done = true;
    if (mod && (k === "z" || k === "Z")) send({ type: e.shiftKey ? "redo" : "undo" });
    else if (mod && (k === "y" || k === "Y")) send({ type: "redo" });
    else if (mod || e.altKey) done = false;
    else if (/^[1-9]$/.test(k)) { const v = +k; if (v <= get("classes").length) { model.set("active_class", v); model.set("tool", get("tool") === "brush" || get("tool") === "fill" ? get("tool") : "brush"); model.save_changes(); } }
    else if (k === "0" || k === "e" || k === "E") setTrait("tool", "eraser");
    else if (k === "b" || k === "B") setTrait("tool", "brush");
    else if (k === "f" || k === "F") setTrait("tool", "fill");
    else if (k === "a" || k === "A") setTrait("tool", "accept");
    else if (k === "h" || k === "H") setTrait("tool", "pan");
    else if (k === "[") setTrait("brush_size", Math.max(1, Math.round(get("brush_size") / 1.25)));
    else if (k === "]") setTrait("brush_size", Math.min(512, Math.max(get("brush_size") + 1, Math.round(get("brush_size") * 1.25))));
    else if (k === "n" || k === "N") send({ type: "next" });
    else if (k === " ") { st.overlays = !st.overlays; root.dataset.overlays = st.overlays ? "1" : "0"; if (st.tile) { compose(); present(); } }
    else if (k === "ArrowUp" || k === "PageUp") navigate(st.axis, st.index + 1);
    else if (k === "ArrowDown" || k === "PageDown") navigate(st.axis, st.index - 1);
    else if (k === "Escape") hideMsg();
    else done = false;
    if (done) { e.preventDefault(); e.stopPropagation(); }
  });

  // ------------------------------------------------------------------ orthogonal views
  function drawOrtho() {
    const o = st.ortho; if (!o) return;
    const cur = o.cursor, lutCache = {};
    o.planes.forEach((pl, n) => {
      if (!pl) return;
      const c = orthoCanvases[n], cs = 92, dpr = window.devicePixelRatio || 1;
      c.width = cs * dpr; c.height = cs * dpr; c.style.width = c.style.height = `${cs}px`;
      const g = c.getContext("2d"); g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.fillStyle = "#15171a"; g.fillRect(0, 0, cs, cs);
      const key = o.image.dtype;
      if (!lutCache[key]) { const save = [st.lut, st.lutKey]; rebuildLut(o.image.dtype, o.image.qlo, o.image.qscale); lutCache[key] = st.lut; [st.lut, st.lutKey] = save; }
      const lut = lutCache[key], img = pl.img, lab = pl.lab, n2 = pl.h * pl.w;
      const id = new ImageData(pl.w, pl.h), d = id.data, col = st.colours, a = get("opacity");
      const showL = st.overlays && get("show_labels");
      for (let p = 0; p < n2; p++) {
        let r = lut[img[p]], gg = r, b = r; const v = lab[p];
        if (showL && v) { const k = v * 3; r += (col[k] - r) * a; gg += (col[k + 1] - gg) * a; b += (col[k + 2] - b) * a; }
        d[p * 4] = r; d[p * 4 + 1] = gg; d[p * 4 + 2] = b; d[p * 4 + 3] = 255;
      }
      const tmp = document.createElement("canvas"); tmp.width = pl.w; tmp.height = pl.h; tmp.getContext("2d").putImageData(id, 0, 0);
      const H = pl.r1, W = pl.c1, z = Math.min(cs / W, cs / H), ox = (cs - W * z) / 2, oy = (cs - H * z) / 2;
      pl.fit = { z, ox, oy, H, W };
      g.imageSmoothingEnabled = false; g.drawImage(tmp, 0, 0, pl.w, pl.h, ox, oy, pl.w * pl.step * z, pl.h * pl.step * z);
      const k = AXES.indexOf(pl.axis), other = [0, 1, 2].filter((i) => i !== k);
      const ry = oy + (cur[other[0]] + 0.5) * z, rx = ox + (cur[other[1]] + 0.5) * z;
      g.strokeStyle = "rgba(0,255,255,0.7)"; g.lineWidth = 1; g.beginPath();
      g.moveTo(ox, ry); g.lineTo(ox + W * z, ry); g.moveTo(rx, oy); g.lineTo(rx, oy + H * z); g.stroke();
      g.fillStyle = "rgba(255,255,255,0.85)"; g.font = "10px sans-serif"; g.fillText(`${pl.axis}=${pl.index}`, 3, 11);
      c.classList.toggle("al-current", pl.axis === st.axis);
    });
  }

  orthoCanvases.forEach((c, n) => {
    const at = (e) => {
      const o = st.ortho; if (!o || !o.planes[n]) return null;
      const pl = o.planes[n], f = pl.fit; if (!f) return null;
      const r = c.getBoundingClientRect();
      const x = (e.clientX - r.left - f.ox) / f.z, y = (e.clientY - r.top - f.oy) / f.z;
      const k = AXES.indexOf(pl.axis), other = [0, 1, 2].filter((i) => i !== k);
      const cur = o.cursor.slice();
      cur[other[0]] = Math.max(0, Math.min(f.H - 1, Math.floor(y))); cur[other[1]] = Math.max(0, Math.min(f.W - 1, Math.floor(x)));
      return cur;
    };
    c.addEventListener("click", (e) => {
      const cur = at(e); if (!cur) return;
      send({ type: "cursor", z: cur[0], y: cur[1], x: cur[2] });
      const k = AXES.indexOf(st.axis);
      if (cur[k] !== st.index) navigate(st.axis, cur[k]);
    });
    c.addEventListener("dblclick", () => { const pl = st.ortho && st.ortho.planes[n]; if (pl) switchAxis(pl.axis); });
  });

  // ------------------------------------------------------------------ panels
  function renderPalette() {
    palette.replaceChildren();
    const active = get("active_class"), tool = get("tool");
    get("classes").forEach((c) => {
      const picker = h("input", { type: "color", value: c.colour, title: `colour of ${c.name}`,
        onchange: () => send({ type: "colour", value: c.value, colour: picker.value }) });
      const row = h("div", { class: "al-class" + (c.value === active && tool !== "eraser" ? " al-active" : ""), "data-value": c.value,
        title: `paint ${c.name} (key ${c.value})`, onclick: (e) => { if (e.target !== picker) { model.set("active_class", c.value); if (tool === "eraser" || tool === "pan") model.set("tool", "brush"); model.save_changes(); } } },
        h("span", { class: "al-key", text: c.value <= 9 ? String(c.value) : "" }), picker, h("span", { class: "al-name", text: c.name }));
      palette.append(row);
    });
    palette.append(h("div", { class: "al-class" + (tool === "eraser" ? " al-active" : ""), "data-value": 0, title: "erase (key 0 or E)",
      onclick: () => setTrait("tool", "eraser") }, h("span", { class: "al-key", text: "0" }), h("span", { class: "al-swatch-erase" }), h("span", { class: "al-name", text: "unlabelled (eraser)" })));
  }

  function renderSuggestions() {
    suggList.replaceChildren();
    const items = get("suggestions") || [];
    if (!items.length) { suggList.append(h("div", { class: "al-empty", text: "no suggestions: press Refresh" })); return; }
    items.forEach((s, rank) => {
      const th = h("canvas", { class: "al-thumb", width: 1, height: 1 });
      drawThumb(th, s.key);
      const cur = s.axis === st.axis && s.index === st.index;
      const cls = "al-sugg" + (s.stale ? " al-stale" : "") + (cur ? " al-current" : "") + (s.state === "annotated" ? " al-done" : "");
      const row = h("div", { class: cls, "data-axis": s.axis, "data-index": s.index, "data-rank": rank, title: s.reason || "",
        onclick: () => send({ type: "show", axis: s.axis, index: s.index }) },
        th,
        h("div", { class: "al-sugg-text" },
          h("div", {}, h("b", { text: `${rank + 1}. ${s.axis} = ${s.index}` }),
            s.stale ? h("span", { class: "al-tag al-tag-stale", text: "stale", title: "scored by an older model; Refresh to rank again" }) : null,
            s.state === "annotated" ? h("span", { class: "al-tag al-tag-done", text: "✓" }) : null),
          h("div", { class: "al-small", text: `score ${fmt(s.score)} · ${s.model_version === null || s.model_version === undefined ? "cold start" : "v" + s.model_version}` }),
          h("div", { class: "al-small al-reason", text: s.reason || "" })));
      suggList.append(row);
    });
  }

  function drawThumb(c, key) {
    const t = st.thumbs.get(key); if (!t) return;
    c.width = t.w; c.height = t.h;
    const id = new ImageData(t.w, t.h);
    for (let p = 0; p < t.w * t.h; p++) { const g = t.data[p]; id.data[p * 4] = g; id.data[p * 4 + 1] = g; id.data[p * 4 + 2] = g; id.data[p * 4 + 3] = 255; }
    c.getContext("2d").putImageData(id, 0, 0);
  }

  function skip() {
    const items = get("suggestions") || [];
    const cur = items.find((s) => s.axis === st.axis && s.index === st.index) || items[0];
    if (cur) send({ type: "skip", axis: cur.axis, index: cur.index, then_next: true });
  }

  function renderTraining() {
    const tr = get("trainer") || {}, persistent = get("persistent");
    const state = tr.state || "not started";
    const parts = [state];
    if (tr.device) parts.push(tr.device);
    if (tr.round) parts.push(`round ${tr.round}`);
    if (state === "training" && tr.step !== undefined) parts.push(`step ${tr.step}` + (tr.loss !== undefined && tr.loss !== null ? ` (loss ${fmt(tr.loss)})` : ""));
    const mv = get("model_version"), hist = get("history") || [], last = hist[hist.length - 1];
    if (mv === null || mv === undefined) parts.push("no model yet");
    else parts.push(`model v${mv}` + (last && last.version === mv ? `: loss ${fmt(last.loss)}, val Dice ${fmt(last.val_dice)}` : ""));
    trainStatus.textContent = persistent ? parts.join(" · ") : "in-memory project: no trainer (give a project directory)";
    if (tr.error) trainStatus.append(h("div", { class: "al-small al-err-text", text: tr.error }));
    root.dataset.trainer = state;
    const busy = state === "training" || state === "predicting";
    progress.hidden = !busy;
    progress.firstChild.style.width = `${Math.round(100 * (tr.progress || 0))}%`;
    progress.title = busy ? `${state} ${Math.round(100 * (tr.progress || 0))}%${tr.phase ? " (" + tr.phase + ")" : ""}` : "";
    startBtn.disabled = !persistent || !!tr.alive; stopBtn.disabled = !persistent || !tr.alive;
    drawCurve();
  }

  function drawCurve() {
    const hist = get("history") || [], w = 280, hh = 84, dpr = window.devicePixelRatio || 1;
    curve.width = w * dpr; curve.height = hh * dpr; curve.style.width = `${w}px`; curve.style.height = `${hh}px`;
    const g = curve.getContext("2d"); g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, hh);
    const L = 26, R = w - 26, T = 14, B = hh - 14;
    g.strokeStyle = "rgba(128,128,128,0.5)"; g.lineWidth = 1; g.strokeRect(L, T, R - L, B - T);
    g.font = "9px sans-serif"; g.fillStyle = "#2a9d55"; g.fillText("val Dice", 1, 9); g.fillText("1", L - 8, T + 4); g.fillText("0", L - 8, B + 3);
    g.fillStyle = "#e07b00"; g.textAlign = "right"; g.fillText("loss", w - 1, 9); g.textAlign = "left";
    if (!hist.length) { g.fillStyle = "rgba(128,128,128,0.9)"; g.fillText("learning curve: no model version yet", L + 8, (T + B) / 2 + 3); return; }
    const n = hist.length, xs = (i) => n === 1 ? (L + R) / 2 : L + (R - L) * i / (n - 1);
    const lmax = Math.max(1e-9, ...hist.map((r) => r.loss || 0));
    const series = [["val_dice", "#2a9d55", (v) => B - (B - T) * Math.max(0, Math.min(1, v))], ["loss", "#e07b00", (v) => B - (B - T) * v / lmax]];
    for (const [key, colr, ys] of series) {
      g.strokeStyle = colr; g.fillStyle = colr; g.lineWidth = 1.5; g.beginPath(); let started = false;
      hist.forEach((r, i) => { const v = r[key]; if (v === null || v === undefined) return; const x = xs(i), y = ys(v); if (started) g.lineTo(x, y); else { g.moveTo(x, y); started = true; } });
      g.stroke();
      hist.forEach((r, i) => { const v = r[key]; if (v === null || v === undefined) return; g.beginPath(); g.arc(xs(i), ys(v), 2, 0, 2 * Math.PI); g.fill(); });
    }
    g.fillStyle = "rgba(128,128,128,0.9)"; g.fillText(`v${hist[0].version}`, L, hh - 3); if (n > 1) g.fillText(`v${hist[n - 1].version}`, R - 14, hh - 3);
  }

  // ------------------------------------------------------------------ UI sync
  function syncSliceUI() {
    const n = get("shape")[AXES.indexOf(st.axis)];
    slider.max = String(n - 1); slider.value = String(st.index);
    indexBox.max = String(n - 1); if (document.activeElement !== indexBox) indexBox.value = String(st.index);
    ofLabel.textContent = `/ ${n - 1}`;
    axisBtns.forEach((b) => b.classList.toggle("al-on", b.dataset.axis === st.axis));
    for (const row of suggList.children) row.classList.toggle("al-current", row.dataset.axis === st.axis && +row.dataset.index === st.index);
  }

  function syncToolUI() {
    const tool = get("tool");
    toolBtns.forEach((b) => b.classList.toggle("al-on", b.dataset.tool === tool));
    sizeRange.value = String(Math.min(101, get("brush_size"))); sizeLabel.textContent = `${get("brush_size")} px`;
    root.dataset.tool = tool; root.dataset.activeClass = String(get("active_class"));
    canvas.style.cursor = tool === "pan" ? "grab" : tool === "fill" ? "cell" : "crosshair";
    renderPalette();
  }

  function syncOverlayUI() {
    showLab.checked = get("show_labels"); showPred.checked = get("show_prediction"); showUnc.checked = get("show_uncertainty");
    opacity.value = String(get("opacity"));
    const hasModel = get("model_version") !== null && get("model_version") !== undefined;
    showPred.disabled = showUnc.disabled = !hasModel;
    showPredL.title = hasModel ? "the current model's prediction" : "no model yet: start the trainer";
  }

  function syncWindowUI() {
    const [vmin, vmax] = get("value_range"), [lo, hi] = st.window;
    const span = Math.max(vmax - vmin, 1e-9);
    levelR.min = String(vmin); levelR.max = String(vmax); levelR.step = String(span / 1000);
    widthR.min = String(span / 1000); widthR.max = String(span * 2); widthR.step = String(span / 1000);
    levelR.value = String((lo + hi) / 2); widthR.value = String(hi - lo);
    levelR.title = `level ${fmt((lo + hi) / 2, 4)}`; widthR.title = `width ${fmt(hi - lo, 4)}`;
  }

  function syncStateUI() {
    const state = get("slice_state");
    stateBadge.textContent = state.replace("_", " "); stateBadge.dataset.state = state;
    annotatedBtn.textContent = state === "annotated" ? "Annotated ✓ (undo)" : "✓ Annotated";
    annotatedBtn.classList.toggle("al-on", state === "annotated");
    undoBtn.disabled = !get("can_undo"); redoBtn.disabled = !get("can_redo");
  }

  function updateStatus(pos) {
    const [H, W] = dims();
    const parts = [`${st.axis} = ${st.index}`, `${H} × ${W}`, `zoom ${Math.round((st.view ? st.view.zoom : 1) * 100)}%`];
    const t = st.tile;
    if (pos && t) {
      const [x, y] = toSlice(...pos); const row = Math.floor(y), col = Math.floor(x);
      if (row >= 0 && col >= 0 && row < H && col < W) {
        const i = Math.floor((row - t.r0) / t.step), j = Math.floor((col - t.c0) / t.step);
        if (i >= 0 && j >= 0 && i < t.h && j < t.w) {
          const p = i * t.w + j, v = t.qlo + t.img[p] * t.qscale, lab = t.lab[p];
          const cls = lab ? (get("classes")[lab - 1] || {}).name : "unlabelled";
          parts.push(`(${row}, ${col}) = ${fmt(v, 5)} · ${cls}`);
          if (t.conf) parts.push(`confidence ${(t.conf[p] / 255).toFixed(2)}`);
        }
      }
    }
    if (t && t.step > 1) parts.push(`overview 1:${t.step}`);
    status.textContent = parts.join(" · ");
  }

  // ------------------------------------------------------------------ messages from the kernel
  let msgTimer = null;
  function showMsg(text, kind) {
    clearTimeout(msgTimer);
    msgBox.replaceChildren(h("span", { class: "al-msg-text", text }), h("button", { class: "al-msg-close", text: "×", title: "dismiss (Esc)", onclick: hideMsg }));
    msgBox.className = `al-msg al-${kind}`; msgBox.hidden = false; root.dataset.message = kind;
    msgTimer = setTimeout(hideMsg, kind === "error" ? 30000 : 5000);
  }
  function showError(text) { showMsg(text, "error"); }
  function hideMsg() { msgBox.hidden = true; delete root.dataset.message; }

  function onCustom(msg, buffers) {
    if (msg.client && msg.client !== client && ["slice", "labels", "overlays", "ack", "pong"].includes(msg.type)) return;
    switch (msg.type) {
      case "slice": {
        const mine = st.inflight && msg.req === st.inflight.req ? st.inflight : null;
        if (mine) st.inflight = null;
        // while scrolling, show each slice that arrives on this axis; the last request wins
        if (msg.axis === st.axis && (msg.index === st.index || st.wanted || st.inflight || !st.tile) && installTile(msg, buffers)) {
          updateStatus(st.mouse);
          if (mine) record("slice", now() - mine.t0);
          root.dataset.kernelMs = String(msg.kernel_ms);
        }
        pump();
        break;
      }
      case "labels": {
        dropPending(msg.applied);
        const t = st.tile;
        if (t && t.axis === msg.axis && t.index === msg.index && t.r0 === msg.r0 && t.c0 === msg.c0 && t.h === msg.h && t.w === msg.w && t.step === msg.step) {
          t.lab = u8(buffers[0]); reapplyPending();
          compose(); present();
        }
        break;
      }
      case "overlays": {
        const t = st.tile;
        if (t && t.axis === msg.axis && t.index === msg.index && t.r0 === msg.r0 && t.c0 === msg.c0 && t.h === msg.h && t.w === msg.w && t.step === msg.step) {
          t.pred = u8(buffers[0]); t.conf = u8(buffers[1]);
          if (!st.stroke) { compose(); present(); }
        } else requestView(true);
        break;
      }
      case "ack": {
        const tUp = st.upTimes.get(msg.seq);
        if (tUp !== undefined) { record("ack", now() - tUp); st.upTimes.delete(msg.seq); }
        root.dataset.acked = String(msg.seq);
        // the kernel is done with it; labels it changed in view came before this ack (or follow an error)
        dropPending(msg.seq);
        break;
      }
      case "error":
        if (msg.client && msg.client !== client) break;
        showError(msg.message);
        if (msg.req !== null && msg.req !== undefined && st.inflight && msg.req === st.inflight.req) { st.inflight = null; pump(); }
        break;
      case "notice": showMsg(msg.message, "notice"); break;
      case "pong":
        if (msg.client !== client) break;
        record("ping", now() - msg.t);
        if (msg.te && msg.tk) { record("ping_up", msg.tk - msg.te); record("ping_down", performance.timeOrigin + now() - msg.tk); }
        break;
      case "navigate": if (msg.axis !== st.axis || msg.index !== st.index) navigate(msg.axis, msg.index, msg.axis === st.axis); break;
      case "ortho": {
        // only the planes that changed come; the crosshair (cursor) always
        const planes = st.ortho ? st.ortho.planes : [null, null, null];
        msg.planes.forEach((pl, n) => { planes[AXES.indexOf(pl.axis)] = { ...pl, img: codes(buffers[2 * n], msg.image.dtype), lab: u8(buffers[2 * n + 1]) }; });
        st.ortho = { cursor: msg.cursor, planes, image: msg.image };
        drawOrtho();
        break;
      }
      case "thumbs": {
        msg.items.forEach((it, n) => st.thumbs.set(it.key, { w: it.w, h: it.h, data: u8(buffers[n]) }));
        renderSuggestions();
        break;
      }
    }
  }

  // ------------------------------------------------------------------ trait changes
  const redraw = () => { if (st.tile) { compose(); present(); } drawOrtho(); };
  const handlers = [
    ["change:classes", () => { rebuildColours(); renderPalette(); redraw(); }],
    ["change:window", () => { const w = get("window"); if (w[0] !== st.window[0] || w[1] !== st.window[1]) setWindow(w.slice(), false); }],
    ["change:show_labels change:show_prediction change:show_uncertainty change:opacity", () => { syncOverlayUI(); redraw(); }],
    ["change:tool change:active_class change:brush_size", () => { syncToolUI(); present(); }],
    ["change:suggestions", renderSuggestions],
    ["change:trainer change:history", renderTraining],
    ["change:model_version", () => { syncOverlayUI(); renderTraining(); }],
    ["change:slice_state change:can_undo change:can_redo", syncStateUI],
    ["change:cursor", () => present()],
    ["change:canvas_size", () => { sizeCanvas(); fitView(); requestView(true); }],
    ["change:strategy change:strategies", () => renderStrategies()],
    ["msg:custom", onCustom],
  ];
  for (const [ev, fn] of handlers) model.on(ev, fn);

  function renderStrategies() {
    strategySel.replaceChildren(...(get("strategies") || []).map((s) => h("option", { value: s, text: s, selected: s === get("strategy") })));
  }

  // ------------------------------------------------------------------ start
  title.textContent = get("project_name");
  title.title = "project";
  rebuildColours(); sizeCanvas(); renderStrategies();
  syncSliceUI(); syncToolUI(); syncOverlayUI(); syncWindowUI(); syncStateUI(); renderSuggestions(); renderTraining();
  fitView(); present(); updateStatus(null);
  send({ type: "hello" });
  requestView(true);

  return () => {
    for (const [ev, fn] of handlers) model.off(ev, fn);
    window.removeEventListener("mouseup", onUp);
    window.removeEventListener("mousemove", onWindowMove);
    if (RAW) window.removeEventListener("pointerrawupdate", onRaw);
    dbg.widgets = dbg.widgets.filter((w) => w.client !== client);
  };
}

export default { render };
