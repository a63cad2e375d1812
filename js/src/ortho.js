// The three small orthogonal planes through the crosshair: click one to move the crosshair there (and the
// main view to that slice), double-click to show that plane's axis in the main view.

import { AXES, h, otherAxes } from "./util.js";

const SIDE = 92;  // CSS px of each plane's canvas

export function createOrtho(app) {
  const { get, st, view } = app;
  const canvases = AXES.map((a) => h("canvas", { class: "al-ortho-view", "data-axis": a,
    title: `${a} plane through the crosshair: click to move the crosshair there, double-click to show this plane` }));

  function draw() {
    const o = st.ortho; if (!o) return;
    const cur = o.cursor, luts = {};
    o.planes.forEach((pl, n) => {
      if (!pl) return;
      const c = canvases[n], cs = SIDE, dpr = window.devicePixelRatio || 1;
      c.width = cs * dpr; c.height = cs * dpr; c.style.width = c.style.height = `${cs}px`;
      const g = c.getContext("2d"); g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.fillStyle = "#15171a"; g.fillRect(0, 0, cs, cs);
      const key = o.image.dtype;
      luts[key] ||= view.lutFor(o.image.dtype, o.image.qlo, o.image.qscale);
      const lut = luts[key], img = pl.img, lab = pl.lab, n2 = pl.h * pl.w;
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
      const other = otherAxes(AXES.indexOf(pl.axis));
      const ry = oy + (cur[other[0]] + 0.5) * z, rx = ox + (cur[other[1]] + 0.5) * z;
      g.strokeStyle = "rgba(0,255,255,0.7)"; g.lineWidth = 1; g.beginPath();
      g.moveTo(ox, ry); g.lineTo(ox + W * z, ry); g.moveTo(rx, oy); g.lineTo(rx, oy + H * z); g.stroke();
      g.fillStyle = "rgba(255,255,255,0.85)"; g.font = "10px sans-serif"; g.fillText(`${pl.axis}=${pl.index}`, 3, 11);
      c.classList.toggle("al-current", pl.axis === st.axis);
    });
  }

  canvases.forEach((c, n) => {
    // the volume position (z, y, x) under a click: this plane's point, the crosshair's along its axis
    const at = (e) => {
      const o = st.ortho; if (!o || !o.planes[n]) return null;
      const pl = o.planes[n], f = pl.fit; if (!f) return null;
      const r = c.getBoundingClientRect();
      const x = (e.clientX - r.left - f.ox) / f.z, y = (e.clientY - r.top - f.oy) / f.z;
      const other = otherAxes(AXES.indexOf(pl.axis));
      const cur = o.cursor.slice();
      cur[other[0]] = Math.max(0, Math.min(f.H - 1, Math.floor(y))); cur[other[1]] = Math.max(0, Math.min(f.W - 1, Math.floor(x)));
      return cur;
    };
    c.addEventListener("click", (e) => {
      const cur = at(e); if (!cur) return;
      app.channel.send({ type: "cursor", z: cur[0], y: cur[1], x: cur[2] });
      const k = AXES.indexOf(st.axis);
      if (cur[k] !== st.index) app.navigate(st.axis, cur[k]);
    });
    c.addEventListener("dblclick", () => { const pl = st.ortho && st.ortho.planes[n]; if (pl) app.switchAxis(pl.axis); });
  });

  return { canvases, draw };
}
