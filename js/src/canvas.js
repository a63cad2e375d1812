// The main canvas: the shown slice with its label, prediction and uncertainty overlays, the view's geometry
// (zoom and pan, slice <-> canvas coordinates), its size (it fits the cell's width), and the status line.

import { AXES, HEAT, h, fmt, hexRgb, otherAxes } from "./util.js";

const MIN_SIDE = 160;  // CSS px: below this a slice is too small to paint on; the cell scrolls instead

export function createCanvas(app) {
  const { get, st } = app;
  const canvas = h("canvas", { class: "al-canvas", tabindex: "-1" });
  const ctx = canvas.getContext("2d");
  const off = document.createElement("canvas");  // the tile at one canvas pixel per tile pixel
  const offCtx = off.getContext("2d");
  const status = h("div", { class: "al-status" });
  let side = get("canvas_size");  // CSS px of the square canvas: canvas_size, or less in a narrower cell
  const S = () => side;
  const dpr = () => window.devicePixelRatio || 1;

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
    const s = S(), d = dpr();
    canvas.width = Math.round(s * d); canvas.height = Math.round(s * d);
    canvas.style.width = canvas.style.height = `${s}px`;
    status.style.width = `${s}px`;
  }

  // fit the canvas into `width` CSS px (at most canvas_size); the same part of the slice stays in view.
  // True when its size (or the device pixel ratio: a browser zoom) changed, so the view needs drawing again.
  function fitWidth(width) {
    const most = get("canvas_size");
    const s = Math.max(Math.min(MIN_SIDE, most), Math.min(most, Math.floor(width)));
    if (s === side && canvas.width === Math.round(s * dpr())) return false;
    if (st.view) st.view.zoom *= s / side;
    side = s;
    sizeCanvas();
    return true;
  }

  // the region and step the current view needs (step: the coarsest that still has >= 1 sample per device pixel)
  function neededRegion() {
    const [H, W] = dims(); const v = st.view, s = S();
    const step = Math.max(1, Math.floor(1 / (v.zoom * dpr())));
    const half = s / 2 / v.zoom;
    let r0 = v.cy - half, r1 = v.cy + half, c0 = v.cx - half, c1 = v.cx + half;
    const mr = (r1 - r0) * 0.25, mc = (c1 - c0) * 0.25;
    const vis = { r0: Math.max(0, Math.floor(r0)), r1: Math.min(H, Math.ceil(r1)), c0: Math.max(0, Math.floor(c0)), c1: Math.min(W, Math.ceil(c1)) };
    r0 = Math.max(0, Math.floor((r0 - mr) / step) * step); c0 = Math.max(0, Math.floor((c0 - mc) / step) * step);
    r1 = Math.min(H, Math.ceil(r1 + mr)); c1 = Math.min(W, Math.ceil(c1 + mc));
    if (r1 <= r0) { r0 = 0; r1 = H; } if (c1 <= c0) { c0 = 0; c1 = W; }
    return { vis, req: { r0, r1, c0, c1, step } };
  }

  // does the tile shown cover the visible part of the view at a step near the one it needs?
  function covers(vis, req) {
    const t = st.tile;
    return !!t && t.axis === st.axis && t.index === st.index && t.step <= req.step && t.step * 4 > req.step &&
      t.r0 <= vis.r0 && t.r1 >= vis.r1 && t.c0 <= vis.c0 && t.c1 >= vis.c1;
  }

  // ------------------------------------------------------------------ colours and window/level
  function rebuildColours() {
    st.colours.fill(0);
    for (const c of get("classes")) { const [r, g, b] = hexRgb(c.colour); st.colours.set([r, g, b], c.value * 3); }
  }
  const classRgb = (v) => [st.colours[v * 3], st.colours[v * 3 + 1], st.colours[v * 3 + 2]];

  // the grey level of every code of an image of this kind under the current window
  function lutFor(kind, qlo, qscale) {
    const [lo, hi] = st.window;
    const n = kind === "u8" ? 256 : 65536, lut = new Uint8Array(n), s = 255 / Math.max(hi - lo, 1e-12);
    for (let q = 0; q < n; q++) { const g = (qlo + q * qscale - lo) * s; lut[q] = g <= 0 ? 0 : g >= 255 ? 255 : g; }
    return lut;
  }
  function rebuildLut(kind, qlo, qscale) {
    const [lo, hi] = st.window;
    const key = `${kind}|${qlo}|${qscale}|${lo}|${hi}`;
    if (st.lutKey === key) return;
    st.lut = lutFor(kind, qlo, qscale); st.lutKey = key;
  }

  // ------------------------------------------------------------------ drawing
  function installTile(t) {
    st.tile = t;
    off.width = t.w; off.height = t.h;
    st.imgData = offCtx.createImageData(t.w, t.h);
    rebuildLut(t.kind, t.qlo, t.qscale);
  }

  // the tile's pixels i0..i1 x j0..j1 with their overlays -> the off-screen canvas
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

  // the off-screen tile -> the canvas at the view's zoom and pan, with the slice's border, the crosshair and the brush
  function present() {
    const s = S(), d = dpr();
    ctx.setTransform(d, 0, 0, d, 0, 0);
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
    const other = otherAxes(AXES.indexOf(st.axis));
    if (cur.length === 3) {
      const [cx, cy] = toScreen(cur[other[1]] + 0.5, cur[other[0]] + 0.5);
      ctx.strokeStyle = "rgba(0,255,255,0.8)"; ctx.beginPath();
      ctx.moveTo(cx - 6, cy); ctx.lineTo(cx - 2, cy); ctx.moveTo(cx + 2, cy); ctx.lineTo(cx + 6, cy);
      ctx.moveTo(cx, cy - 6); ctx.lineTo(cx, cy - 2); ctx.moveTo(cx, cy + 2); ctx.lineTo(cx, cy + 6); ctx.stroke();
    }
    // brush outline under the pointer
    const tool = get("tool");
    if (st.mouse && app.isStrokeTool(tool)) {
      const [mx, my] = st.mouse;
      ctx.beginPath(); ctx.arc(mx, my, Math.max(1, get("brush_size") / 2 * z), 0, 2 * Math.PI);
      ctx.strokeStyle = tool === "eraser" ? "rgba(255,255,255,0.9)" : `rgb(${classRgb(get("active_class")).join(",")})`;
      ctx.stroke();
    }
  }

  // forces the raster of the pixel under the pointer (benchmarks: when is the paint visible?)
  const readPixel = (x, y) => ctx.getImageData(Math.floor(x), Math.floor(y), 1, 1);

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
    if (t && t.step > 1) parts.push(`overview 1:${t.step}` + (t.level ? ` (pyramid level ${t.level})` : ""));
    status.textContent = parts.join(" · ");
  }

  return {
    canvas, status, S, dims, fitView, toSlice, toScreen, eventPos, sizeCanvas, fitWidth, neededRegion, covers,
    rebuildColours, classRgb, lutFor, rebuildLut, installTile, compose, present, readPixel, updateStatus,
  };
}
