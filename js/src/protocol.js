// The messages between this view and the kernel, as al_annotator/jupyter/_protocol.py documents them:
// which view a message is for (client ids), binary buffers in and out, and the ids of view requests.

// messages the kernel addresses to one view; another view of the same widget ignores them
const PER_VIEW = new Set(["slice", "labels", "overlays", "ack", "pong"]);

// a DataView from the comm -> a typed array (each message has buffers of its own, so a view is ours to
// modify; uint16 needs an even offset, else it is copied)
export function u8(dv) { return new Uint8Array(dv.buffer, dv.byteOffset, dv.byteLength); }
export function codes(dv, kind) {
  if (kind === "u8") return u8(dv);
  if (dv.byteOffset % 2 === 0) return new Uint16Array(dv.buffer, dv.byteOffset, dv.byteLength / 2);
  return new Uint16Array(dv.buffer.slice(dv.byteOffset, dv.byteOffset + dv.byteLength));
}

export function createChannel(model) {
  const client = Math.random().toString(36).slice(2, 10);
  const send = (content, buffers) => model.send({ client, ...content }, undefined, buffers || []);
  return {
    client,
    send,
    forOtherView: (msg) => !!msg.client && msg.client !== client && PER_VIEW.has(msg.type),
    // a whole stroke: its flat indices into the slice, as one little-endian uint32 buffer
    sendStroke: (seq, stroke, idx) => send({ type: "stroke", seq, tool: stroke.tool, value: stroke.value, axis: stroke.axis,
      index: stroke.index }, [idx.buffer]),
  };
}

// a "slice" message -> the tile the canvas draws: {axis, index, r0, r1, c0, c1, step, h, w, level, kind, qlo, qscale,
// img (codes), lab, pred, conf}; level: the store's pyramid level the image was read from (0: the full image);
// a string says what is wrong with it
export function decodeTile(msg, buffers) {
  const layers = msg.layers || [];
  const at = (name) => { const k = layers.indexOf(name); return k >= 0 ? buffers[k] : null; };
  const n = msg.h * msg.w;
  const t = {
    axis: msg.axis, index: msg.index, r0: msg.r0, r1: msg.r1, c0: msg.c0, c1: msg.c1, step: msg.step, h: msg.h, w: msg.w,
    level: msg.level || 0, kind: msg.image.dtype, qlo: msg.image.qlo, qscale: msg.image.qscale,
    img: codes(at("image"), msg.image.dtype), lab: u8(at("labels")),
    pred: at("prediction") ? u8(at("prediction")) : null, conf: at("confidence") ? u8(at("confidence")) : null,
  };
  if (t.img.length !== n || t.lab.length !== n) return `the kernel sent a ${msg.h}x${msg.w} tile with ${t.img.length} pixels`;
  return t;
}

// does a "labels" or "overlays" message cover exactly this tile?
export const sameTile = (t, msg) => !!t && t.axis === msg.axis && t.index === msg.index && t.r0 === msg.r0 && t.c0 === msg.c0 &&
  t.h === msg.h && t.w === msg.w && t.step === msg.step;

// an "ortho" message -> the three planes (only the changed ones come: the others are kept from `planes`)
export function decodeOrtho(msg, buffers, planes, axes) {
  const out = planes ? planes.slice() : [null, null, null];
  msg.planes.forEach((pl, n) => {
    out[axes.indexOf(pl.axis)] = { ...pl, img: codes(buffers[2 * n], msg.image.dtype), lab: u8(buffers[2 * n + 1]) };
  });
  return { cursor: msg.cursor, planes: out, image: msg.image };
}

// a "thumbs" message -> [key, {w, h, data}] pairs
export const decodeThumbs = (msg, buffers) => msg.items.map((it, n) => [it.key, { w: it.w, h: it.h, data: u8(buffers[n]) }]);

// "view" requests: one in flight at a time (20 s before it counts as lost); while it is out, the newest wanted
// region waits and older wanted ones are dropped, so scrolling through slices never queues a backlog
export function createViewRequests(send, now) {
  const r = {
    req: 0, inflight: null, wanted: null,
    want(region) { r.wanted = { ...region, t0: now() }; r.pump(); },
    pump() {
      if (r.inflight && now() - r.inflight.t0 < 20000) return;
      if (!r.wanted) return;
      const w = r.wanted; r.wanted = null;
      r.inflight = { ...w, req: ++r.req };
      send({ type: "view", req: r.inflight.req, axis: w.axis, index: w.index, r0: w.r0, r1: w.r1, c0: w.c0, c1: w.c1, step: w.step });
    },
    // the request a "slice" (or an "error") answers, if it is the one in flight; it is no longer in flight
    answered(req) {
      if (req === null || req === undefined || !r.inflight || req !== r.inflight.req) return null;
      const mine = r.inflight; r.inflight = null; return mine;
    },
    busy: () => !!(r.wanted || r.inflight),
  };
  return r;
}
