// Everything around the canvas: the slice bar, the toolbar (its tools come from the kernel: the `tools`
// trait, _protocol.TOOLS), the display bar, the class palette, the suggestion queue, the training status
// with its learning curve, and the message box. Each render*/sync* function redraws one part from the traits.

import { AXES, fmt, h } from "./util.js";

export function createPanels(app) {
  const { get, setTrait, model, st } = app;
  const send = (content) => app.channel.send(content);

  // ------------------------------------------------------------------ slice bar
  const axisBtns = AXES.map((a) => h("button", { class: "al-axis", "data-axis": a, title: `show ${a} slices`, text: a,
    onclick: () => app.switchAxis(a) }));
  const slider = h("input", { type: "range", class: "al-slider", min: 0, step: 1,
    oninput: () => app.navigate(st.axis, +slider.value) });
  const indexBox = h("input", { type: "number", class: "al-indexbox", min: 0, step: 1,
    onchange: () => app.navigate(st.axis, +indexBox.value) });
  const ofLabel = h("span", { class: "al-of" });
  const stateBadge = h("span", { class: "al-badge" });
  const annotatedBtn = h("button", { class: "al-annotated", title: "commit this slice as fully annotated (the trainer trains on it) and refresh the suggestions",
    onclick: () => send({ type: "annotated", annotated: get("slice_state") !== "annotated" }) });
  const title = h("span", { class: "al-title", title: "project" });

  // ------------------------------------------------------------------ toolbar
  const toolGroup = h("span", { class: "al-group al-tools" });
  const sizeRange = h("input", { type: "range", class: "al-size", min: 1, max: 101, step: 1,
    oninput: () => setTrait("brush_size", +sizeRange.value) });
  const sizeLabel = h("span", { class: "al-sizelabel" });
  const undoBtn = h("button", { class: "al-undo", text: "↶ Undo", title: "undo your last edit (Ctrl+Z)", onclick: () => send({ type: "undo" }) });
  const redoBtn = h("button", { class: "al-redo", text: "↷ Redo", title: "redo (Ctrl+Y)", onclick: () => send({ type: "redo" }) });

  // ------------------------------------------------------------------ display bar
  const check = (trait, label, tip) => {
    const box = h("input", { type: "checkbox", "data-trait": trait, onchange: () => setTrait(trait, box.checked) });
    return [box, h("label", { class: "al-check", title: tip }, box, label)];
  };
  const [showLab, showLabL] = check("show_labels", "Labels", "label overlay (Space hides all overlays)");
  const [showPred, showPredL] = check("show_prediction", "Prediction", "the served prediction (the instant classifier's or the model's)");
  const [showUnc, showUncL] = check("show_uncertainty", "Uncertainty", "heat map of 1 - confidence of the served prediction");
  const opacity = h("input", { type: "range", class: "al-opacity", min: 0, max: 1, step: 0.05,
    oninput: () => setTrait("opacity", +opacity.value) });
  const levelR = h("input", { type: "range", class: "al-level", step: "any", oninput: () => wlFromSliders() });
  const widthR = h("input", { type: "range", class: "al-width", step: "any", oninput: () => wlFromSliders() });
  const autoBtn = h("button", { text: "Auto W/L", title: "reset window/level to the project's display window (right-drag on the image changes it)",
    onclick: () => app.setWindow(get("default_window").slice(), true) });

  // ------------------------------------------------------------------ side panel
  const palette = h("div", { class: "al-palette" });
  const strategySel = h("select", { class: "al-strategy", title: "acquisition strategy",
    onchange: () => send({ type: "refresh", strategy: strategySel.value }) });
  const suggList = h("div", { class: "al-sugg-list" });
  const nextBtn = h("button", { class: "al-next", text: "Next ▶", title: "go to the best suggestion not yet annotated (N)", onclick: () => send({ type: "next" }) });
  const skipBtn = h("button", { class: "al-skip", text: "Skip", title: "drop this suggestion and go to the next", onclick: () => skip() });
  const refreshBtn = h("button", { class: "al-refresh", text: "Refresh", title: "rank the slices again with the current model",
    onclick: () => send({ type: "refresh", strategy: strategySel.value }) });
  // the Session's policy (auto_rerank): re-rank when a new model version lands, else mark the queue stale
  const [autoRerank, autoRerankL] = check("auto_rerank", "auto", "re-rank the suggestions whenever a new model version lands (off: keep them, marked stale, until Refresh)");
  autoRerankL.classList.add("al-auto");
  const startBtn = h("button", { class: "al-start", text: "Start", title: "start the background trainer process", onclick: () => send({ type: "trainer", action: "start" }) });
  const stopBtn = h("button", { class: "al-stop", text: "Stop", title: "stop the trainer", onclick: () => send({ type: "trainer", action: "stop" }) });
  const trainStatus = h("div", { class: "al-train-status" });
  // which tier serves the overlays (the kernel's words: the `served` trait's summary), and tier 1 on/off
  const servedLine = h("div", { class: "al-served" });
  const [liveBox, liveL] = check("live_preview", "live", "instant classifier: refit after every stroke and predict the slice on screen");
  liveL.classList.add("al-auto");
  const progress = h("div", { class: "al-progress" }, h("div", { class: "al-progress-bar" }));
  const progressText = h("div", { class: "al-progress-text" });  // "training 37 % · ETA 1:20 min"
  const curve = h("canvas", { class: "al-curve" });
  const msgBox = h("div", { class: "al-msg", hidden: true });

  const bars = [
    h("div", { class: "al-bar" }, title, h("span", { class: "al-group" }, ...axisBtns), slider, indexBox, ofLabel, stateBadge, annotatedBtn),
    h("div", { class: "al-bar" }, toolGroup,
      h("label", { class: "al-field", title: "brush diameter in image pixels ([ and ])" }, "Size", sizeRange, sizeLabel),
      undoBtn, redoBtn),
    h("div", { class: "al-bar" }, showLabL, showPredL, showUncL,
      h("label", { class: "al-field" }, "Opacity", opacity),
      h("label", { class: "al-field", title: "window level (centre)" }, "L", levelR),
      h("label", { class: "al-field", title: "window width" }, "W", widthR), autoBtn),
  ];
  const side = h("div", { class: "al-side" },
    h("div", { class: "al-section" }, h("div", { class: "al-h" }, "Planes"), h("div", { class: "al-ortho" }, ...app.ortho.canvases)),
    h("div", { class: "al-section" }, h("div", { class: "al-h" }, "Classes"), palette),
    h("div", { class: "al-section" }, h("div", { class: "al-h" }, "Suggestions", strategySel, refreshBtn, autoRerankL), suggList,
      h("div", { class: "al-row" }, nextBtn, skipBtn)),
    h("div", { class: "al-section" }, h("div", { class: "al-h" }, "Training", startBtn, stopBtn, liveL), trainStatus, servedLine, progress, progressText, curve));

  function wlFromSliders() {
    const level = +levelR.value, width = Math.max(+widthR.value, 1e-9);
    app.setWindow([level - width / 2, level + width / 2], true);
  }

  // ------------------------------------------------------------------ render from the traits
  function renderTools() {
    toolGroup.replaceChildren(...(get("tools") || []).map((t) => h("button", { class: "al-tool", "data-tool": t.name,
      title: `${t.tooltip} (${t.key})`, text: t.label, onclick: () => setTrait("tool", t.name) })));
    syncToolUI();
  }

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
    // the trainer line is the Session's (TrainerStatus.summary(), the same words napari shows)
    const tr = get("trainer") || {}, persistent = get("persistent");
    const state = tr.state || "not started";
    trainStatus.textContent = persistent ? (tr.summary || state) : "in-memory project: no trainer (give a project directory)";
    app.root.dataset.trainer = state;
    const busy = state === "training" || state === "predicting";
    progress.hidden = progressText.hidden = !busy;
    progress.firstChild.style.width = `${Math.round(100 * (tr.progress || 0))}%`;
    progress.title = busy ? `${state} ${Math.round(100 * (tr.progress || 0))}%${tr.phase ? " (" + tr.phase + ")" : ""}` : "";
    progressText.textContent = busy ? `${state} ${Math.round(100 * (tr.progress || 0))} %${tr.eta ? " · " + tr.eta : ""}` : "";
    startBtn.disabled = !persistent || !!tr.alive; stopBtn.disabled = !persistent || !tr.alive;
    drawCurve();
  }

  function renderServed() {
    const sv = get("served") || {};
    liveBox.checked = !!get("live_preview");
    servedLine.textContent = sv.summary || "";
    servedLine.hidden = !sv.summary;
    servedLine.title = sv.reason || "";
    servedLine.classList.toggle("al-served-error", !!sv.error);
    app.root.dataset.served = sv.tier || "none";
  }

  // the learning curve: validation Dice and loss per model version
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

  function renderStrategies() {
    strategySel.replaceChildren(...(get("strategies") || []).map((s) => h("option", { value: s, text: s, selected: s === get("strategy") })));
  }

  // ------------------------------------------------------------------ sync the controls with the traits
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
    for (const b of toolGroup.children) b.classList.toggle("al-on", b.dataset.tool === tool);
    sizeRange.value = String(Math.min(101, get("brush_size"))); sizeLabel.textContent = `${get("brush_size")} px`;
    app.root.dataset.tool = tool; app.root.dataset.activeClass = String(get("active_class"));
    app.view.canvas.style.cursor = tool === "pan" ? "grab" : tool === "fill" ? "cell" : "crosshair";
    renderPalette();
  }

  function syncPolicyUI() { autoRerank.checked = !!get("auto_rerank"); }

  function syncOverlayUI() {
    showLab.checked = get("show_labels"); showPred.checked = get("show_prediction"); showUnc.checked = get("show_uncertainty");
    opacity.value = String(get("opacity"));
    const served = (get("served") || {}).tier;
    const hasPrediction = !!served || (get("model_version") !== null && get("model_version") !== undefined);
    showPred.disabled = showUnc.disabled = !hasPrediction;
    showPredL.title = served === "instant" ? "the instant classifier's prediction (it serves: see the Training section)"
      : served === "blend" ? "the blend of the instant classifier and the model (it serves: see the Training section)"
      : hasPrediction ? "the model's prediction"
      : get("live_preview") ? "no prediction yet: paint two classes (the instant classifier predicts), or start the trainer"
      : "no model yet: start the trainer";
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

  // ------------------------------------------------------------------ messages
  let msgTimer = null;
  function showMsg(text, kind) {
    clearTimeout(msgTimer);
    msgBox.replaceChildren(h("span", { class: "al-msg-text", text }), h("button", { class: "al-msg-close", text: "×", title: "dismiss (Esc)", onclick: hideMsg }));
    msgBox.className = `al-msg al-${kind}`; msgBox.hidden = false; app.root.dataset.message = kind;
    msgTimer = setTimeout(hideMsg, kind === "error" ? 30000 : 5000);
  }
  function hideMsg() { msgBox.hidden = true; delete app.root.dataset.message; }

  return {
    bars, side, msgBox, title,
    renderTools, renderPalette, renderSuggestions, renderTraining, renderServed, renderStrategies,
    syncSliceUI, syncToolUI, syncOverlayUI, syncWindowUI, syncStateUI, syncPolicyUI,
    showMsg, showError: (text) => showMsg(text, "error"), hideMsg,
    detach: () => clearTimeout(msgTimer),
  };
}
