// Small helpers every module uses: the axes, a DOM builder, number formatting, colours.

export const AXES = ["z", "y", "x"];

// the two other axes of axis number k, in volume order (the rows and columns of its slices)
export const otherAxes = (k) => [0, 1, 2].filter((i) => i !== k);

export function h(tag, attrs = {}, ...children) {
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

export function fmt(x, d = 3) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "–";
  return Math.abs(x) >= 1000 ? x.toFixed(0) : Number(x.toPrecision(d)).toString();
}

export function hexRgb(hex) {
  const n = parseInt(String(hex).slice(1), 16);
  return Number.isFinite(n) ? [(n >> 16) & 255, (n >> 8) & 255, n & 255] : [255, 0, 255];
}

const HEAT_STOPS = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];

function heatTable() {
  const t = new Uint8Array(256 * 3);
  for (let u = 0; u < 256; u++) {
    const f = (u / 255) * (HEAT_STOPS.length - 1), k = Math.min(HEAT_STOPS.length - 2, Math.floor(f)), a = f - k;
    for (let c = 0; c < 3; c++) t[u * 3 + c] = Math.round(HEAT_STOPS[k][c] * (1 - a) + HEAT_STOPS[k + 1][c] * a);
  }
  return t;
}

// the uncertainty overlay's colour map (an inferno-like ramp), RGB per 0..255
export const HEAT = heatTable();
