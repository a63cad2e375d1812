// al_annotator notebook widget: the browser half of al_annotator.jupyter.Annotator, an anywidget ESM.
// The browser paints strokes itself and sends each whole stroke to the kernel on pointer-up as one binary
// message; the kernel stores it and sends the authoritative labels back. The message protocol is documented
// in al_annotator/jupyter/_protocol.py.
//
// The modules: protocol.js (messages, buffers, request ids), canvas.js (the main view: drawing, geometry,
// size), paint.js (strokes and the pointer), ortho.js (the three planes), panels.js (bars, palette,
// suggestions, training), keys.js (shortcuts). This file makes one view: it wires them to the model.
// esbuild bundles them into al_annotator/jupyter/static/annotator.js (`npm run build` in js/).

import { createCanvas } from "./canvas.js";
import { attachKeys } from "./keys.js";
import { createOrtho } from "./ortho.js";
import { createPainter } from "./paint.js";
import { createPanels } from "./panels.js";
import { createChannel, createViewRequests, decodeOrtho, decodeThumbs, decodeTile, sameTile, u8 } from "./protocol.js";
import { AXES, h } from "./util.js";

const MIN_BESIDE = 256;  // CSS px: a narrower canvas goes above the side panel rather than beside it

function render({ model, el }) {
  const dbg = (globalThis.__alAnnotator ||= { timings: { paint: [], painted: [], queued: [], raster: [], slice: [], ack: [], wl: [], ping: [], install: [], overlay: [] }, widgets: [], measurePaint: false });
  const record = (name, ms) => { const a = (dbg.timings[name] ||= []); a.push(ms); if (a.length > 2000) a.shift(); };
  const now = () => performance.now();
  const get = (k) => model.get(k);
  const setTrait = (k, v) => { model.set(k, v); model.save_changes(); };
  const channel = createChannel(model);
  const send = channel.send;

  // ------------------------------------------------------------------ state
  const st = {
    axis: get("axis"), index: get("index"),
    view: null,            // {zoom (CSS px per slice px), cx, cy (slice coords at the canvas centre)}
    tile: null,            // what the kernel sent: region, step, image codes, labels, prediction, confidence
    lut: null, lutKey: "",
    colours: new Uint8Array(256 * 3),
    overlays: true,        // Space toggles
    seq: 0, pending: [],   // strokes sent, not yet in a labels message from the kernel
    upTimes: new Map(),    // stroke seq -> pointer-up time (for the ack latency)
    liveWait: [],          // acked strokes [{editSeq, tUp}] whose prediction has not been drawn yet (stroke -> overlay time)
    overlayDirty: false,   // overlays came during a stroke: drawn when it ends
    overlaysSeen: 0,
    stroke: null, drag: null, mouse: null,
    ortho: null, thumbs: new Map(),
    window: (get("window") || []).slice(),
    wlTimer: null, viewTimer: null,
  };
  const views = createViewRequests(send, now);
  const isStrokeTool = (name) => (get("tools") || []).some((t) => t.name === name && t.stroke);
  const app = { model, get, setTrait, st, channel, dbg, record, now, isStrokeTool, navigate, switchAxis, requestView, scheduleView, setWindow,
    redrawMain: () => { if (st.tile) { app.view.compose(); app.view.present(); } },
    flushOverlays: () => { if (st.overlayDirty && st.tile) { st.overlayDirty = false; app.view.compose(); app.view.present(); overlaysDrawn(st.tile.labelsSeq); } } };

  // ------------------------------------------------------------------ DOM
  const view = app.view = createCanvas(app);
  const ortho = app.ortho = createOrtho(app);
  const panels = app.panels = createPanels(app);
  const root = app.root = h("div", { class: "al-annotator", tabindex: "0", "data-lm-suppress-shortcuts": "true", "data-ready": "0" },
    ...panels.bars,
    h("div", { class: "al-body" }, h("div", { class: "al-stage" }, view.canvas, view.status), panels.side),
    panels.msgBox);
  el.append(root);
  const painter = createPainter(app);
  const detachKeys = attachKeys(app);
  dbg.widgets.push({ client: channel.client, root, st, sendRaw: send, navigate: (a, i) => navigate(a, i), ping: () => send({ type: "ping", t: now(), te: performance.timeOrigin + now() }) });  // for tests and benchmarks

  // ------------------------------------------------------------------ the canvas fits the cell's width
  // (at most canvas_size; with the side panel beside it while both fit, else above it)
  function layout(width) {
    if (!(width > 0)) return;  // not shown (a collapsed output, a hidden tab): keep the size
    const box = getComputedStyle(root);
    const chrome = ["paddingLeft", "paddingRight", "borderLeftWidth", "borderRightWidth"].reduce((s, k) => s + (parseFloat(box[k]) || 0), 0);
    const avail = width - chrome, gap = parseFloat(getComputedStyle(root.querySelector(".al-body")).columnGap) || 0;
    const beside = avail - panels.side.offsetWidth - gap;
    if (!view.fitWidth(beside >= Math.min(MIN_BESIDE, get("canvas_size")) ? beside : avail)) return;
    view.present(); requestView();
  }
  let layoutFrame = 0, lastWidth = 0;
  // el's width is the cell's (the widget sits inside it), so the canvas size never feeds back into it; the
  // work waits for the next frame, outside the observer's callback (no "ResizeObserver loop" errors)
  const resizer = new ResizeObserver((entries) => {
    lastWidth = entries[entries.length - 1].contentRect.width;
    cancelAnimationFrame(layoutFrame);
    layoutFrame = requestAnimationFrame(() => layout(lastWidth));
  });
  resizer.observe(el);

  // ------------------------------------------------------------------ what the view shows
  function requestView(force = false) {
    if (!st.view) view.fitView();
    const { vis, req } = view.neededRegion();
    view.present();
    if (view.covers(vis, req) && !force) return;
    views.want({ axis: st.axis, index: st.index, ...req });
  }

  function scheduleView() { clearTimeout(st.viewTimer); st.viewTimer = setTimeout(() => requestView(), 60); }

  function navigate(axis, index, keepView = true) {
    const n = get("shape")[AXES.indexOf(axis)];
    index = Math.max(0, Math.min(n - 1, Math.round(index)));
    if (!Number.isFinite(index)) return;
    const axisChanged = axis !== st.axis;
    st.axis = axis; st.index = index;
    if (axisChanged || !keepView || !st.view) view.fitView();
    panels.syncSliceUI();
    requestView(true);
  }

  function switchAxis(a) {
    if (a === st.axis) return;
    const cur = get("cursor") || [];
    navigate(a, cur[AXES.indexOf(a)] ?? Math.floor(get("shape")[AXES.indexOf(a)] / 2), false);
  }

  function setWindow(win, save) {
    if (!(win[1] > win[0])) return;
    const t0 = now();
    st.window = win;
    panels.syncWindowUI();
    if (st.tile) { view.rebuildLut(st.tile.kind, st.tile.qlo, st.tile.qscale); view.compose(); view.present(); }
    ortho.draw();
    record("wl", now() - t0);
    clearTimeout(st.wlTimer);
    if (save) st.wlTimer = setTimeout(() => setTrait("window", st.window.slice()), 150);
  }

  // the prediction drawn was made from the labels up to edit `labelsSeq` (tier 1's preview): the strokes it
  // includes are timed from their pointer-up (dbg.timings.overlay), and tests read data-overlay-*
  function overlaysDrawn(labelsSeq) {
    root.dataset.overlays = String(++st.overlaysSeen);
    root.dataset.overlayTier = st.tile.tier || "";
    root.dataset.overlaySeq = labelsSeq === null || labelsSeq === undefined ? "" : String(labelsSeq);
    if (labelsSeq === null || labelsSeq === undefined || !st.liveWait.length) return;
    if (dbg.measurePaint) view.readPixel(view.S() / 2, view.S() / 2);  // benchmarks: force the raster first
    const t = now();
    st.liveWait = st.liveWait.filter((w) => { if (w.editSeq > labelsSeq) return true; record("overlay", t - w.tUp); return false; });
  }

  function installSlice(msg, buffers) {
    const t0 = now();
    const t = decodeTile(msg, buffers);
    if (typeof t === "string") { panels.showError(t); return false; }
    t.tier = msg.tier; t.labelsSeq = msg.labels_seq;
    view.installTile(t);
    painter.dropPending(msg.applied); painter.reapplyPending();
    view.compose(); view.present();
    if (t.pred) overlaysDrawn(msg.labels_seq);
    root.dataset.axis = t.axis; root.dataset.index = String(t.index); root.dataset.ready = "1";
    root.dataset.step = String(t.step);
    root.dataset.level = String(t.level);  // the pyramid level the image came from (tests, benchmarks)
    record("install", now() - t0);
    return true;
  }

  // ------------------------------------------------------------------ messages from the kernel
  function onCustom(msg, buffers) {
    if (channel.forOtherView(msg)) return;
    switch (msg.type) {
      case "slice": {
        const mine = views.answered(msg.req);
        // while scrolling, show each slice that arrives on this axis; the last request wins
        if (msg.axis === st.axis && (msg.index === st.index || views.busy() || !st.tile) && installSlice(msg, buffers)) {
          view.updateStatus(st.mouse);
          if (mine) record("slice", now() - mine.t0);
          root.dataset.kernelMs = String(msg.kernel_ms);
        }
        views.pump();
        break;
      }
      case "labels": {
        painter.dropPending(msg.applied);
        const t = st.tile;
        if (sameTile(t, msg)) { t.lab = u8(buffers[0]); painter.reapplyPending(); view.compose(); view.present(); }
        break;
      }
      case "overlays": {  // the served tier's prediction changed (a tier 1 preview, a model version, a tier switch)
        const t = st.tile;
        if (sameTile(t, msg)) {
          const has = buffers.length >= 2;  // none: nothing serves any more
          t.pred = has ? u8(buffers[0]) : null; t.conf = has ? u8(buffers[1]) : null;
          t.tier = msg.tier; t.labelsSeq = msg.labels_seq;
          if (st.stroke) st.overlayDirty = true;
          else { view.compose(); view.present(); overlaysDrawn(msg.labels_seq); }
        } else requestView(true);
        break;
      }
      case "ack": {
        const tUp = st.upTimes.get(msg.seq);
        if (tUp !== undefined) { record("ack", now() - tUp); st.upTimes.delete(msg.seq); }
        if (tUp !== undefined && msg.ok && get("live_preview")) {
          st.liveWait.push({ editSeq: msg.edit_seq, tUp });
          if (st.liveWait.length > 200) st.liveWait.shift();
        }
        root.dataset.acked = String(msg.seq);
        // the kernel is done with it; labels it changed in view came before this ack (or follow an error)
        painter.dropPending(msg.seq);
        break;
      }
      case "error":
        if (msg.client && msg.client !== channel.client) break;
        panels.showError(msg.message);
        if (views.answered(msg.req)) views.pump();
        break;
      case "notice": panels.showMsg(msg.message, "notice"); break;
      case "pong":
        if (msg.client !== channel.client) break;
        record("ping", now() - msg.t);
        if (msg.te && msg.tk) { record("ping_up", msg.tk - msg.te); record("ping_down", performance.timeOrigin + now() - msg.tk); }
        break;
      case "navigate": if (msg.axis !== st.axis || msg.index !== st.index) navigate(msg.axis, msg.index, msg.axis === st.axis); break;
      case "ortho": st.ortho = decodeOrtho(msg, buffers, st.ortho && st.ortho.planes, AXES); ortho.draw(); break;
      case "thumbs": for (const [key, th] of decodeThumbs(msg, buffers)) st.thumbs.set(key, th); panels.renderSuggestions(); break;
    }
  }

  // ------------------------------------------------------------------ trait changes
  const redraw = () => { app.redrawMain(); ortho.draw(); };
  const handlers = [
    ["change:classes", () => { view.rebuildColours(); panels.renderPalette(); redraw(); }],
    ["change:window", () => { const w = get("window"); if (w[0] !== st.window[0] || w[1] !== st.window[1]) setWindow(w.slice(), false); }],
    ["change:show_labels change:show_prediction change:show_uncertainty change:opacity", () => { panels.syncOverlayUI(); redraw(); }],
    ["change:tool change:active_class change:brush_size", () => { panels.syncToolUI(); view.present(); }],
    ["change:tools", () => { panels.renderTools(); view.present(); }],
    ["change:suggestions", panels.renderSuggestions],
    ["change:trainer change:history", panels.renderTraining],
    ["change:model_version", () => { panels.syncOverlayUI(); panels.renderTraining(); }],
    ["change:served change:live_preview", () => { panels.syncOverlayUI(); panels.renderServed(); }],
    ["change:slice_state change:can_undo change:can_redo", panels.syncStateUI],
    ["change:cursor", () => view.present()],
    ["change:canvas_size", () => { if (lastWidth > 0) layout(lastWidth); else view.fitWidth(get("canvas_size")); view.fitView(); requestView(true); }],
    ["change:strategy change:strategies", panels.renderStrategies],
    ["change:auto_rerank", panels.syncPolicyUI],
    ["msg:custom", onCustom],
  ];
  for (const [ev, fn] of handlers) model.on(ev, fn);

  // ------------------------------------------------------------------ start
  panels.title.textContent = get("project_name");
  view.rebuildColours(); view.sizeCanvas(); panels.renderStrategies(); panels.renderTools();
  panels.syncSliceUI(); panels.syncOverlayUI(); panels.syncWindowUI(); panels.syncStateUI(); panels.syncPolicyUI(); panels.renderSuggestions(); panels.renderTraining(); panels.renderServed();
  view.fitView(); view.present(); view.updateStatus(null);
  send({ type: "hello" });
  requestView(true);

  return () => {
    for (const [ev, fn] of handlers) model.off(ev, fn);
    resizer.disconnect(); cancelAnimationFrame(layoutFrame);
    painter.detach(); detachKeys(); panels.detach();
    clearTimeout(st.wlTimer); clearTimeout(st.viewTimer);
    dbg.widgets = dbg.widgets.filter((w) => w.client !== channel.client);
  };
}

export default { render };
