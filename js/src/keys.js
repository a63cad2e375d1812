// Keyboard shortcuts, while the widget has the focus (JupyterLab leaves keys to elements marked
// data-lm-suppress-shortcuts). A tool's key comes with the tool (the `tools` trait); 1-9 pick a class,
// 0 the eraser.

export function attachKeys(app) {
  const { get, setTrait, model, st } = app;
  const send = (content) => app.channel.send(content);

  const onKey = (e) => {
    const tag = (e.target.tagName || "").toLowerCase();
    if ((tag === "input" && ["number", "text"].includes(e.target.type)) || tag === "select" || tag === "textarea") return;
    const k = e.key, mod = e.ctrlKey || e.metaKey;
    const tool = (get("tools") || []).find((t) => t.key.toLowerCase() === String(k).toLowerCase());
    let done = true;
    if (mod && (k === "z" || k === "Z")) send({ type: e.shiftKey ? "redo" : "undo" });
    else if (mod && (k === "y" || k === "Y")) send({ type: "redo" });
    else if (mod || e.altKey) done = false;
    else if (/^[1-9]$/.test(k)) {
      const v = +k;
      if (v <= get("classes").length) {
        model.set("active_class", v); model.set("tool", get("tool") === "brush" || get("tool") === "fill" ? get("tool") : "brush"); model.save_changes();
      }
    }
    else if (k === "0") setTrait("tool", "eraser");
    else if (tool) setTrait("tool", tool.name);
    else if (k === "[") setTrait("brush_size", Math.max(1, Math.round(get("brush_size") / 1.25)));
    else if (k === "]") setTrait("brush_size", Math.min(512, Math.max(get("brush_size") + 1, Math.round(get("brush_size") * 1.25))));
    else if (k === "n" || k === "N") send({ type: "next" });
    else if (k === " ") { st.overlays = !st.overlays; app.root.dataset.overlays = st.overlays ? "1" : "0"; app.redrawMain(); }
    else if (k === "ArrowUp" || k === "PageUp") app.navigate(st.axis, st.index + 1);
    else if (k === "ArrowDown" || k === "PageDown") app.navigate(st.axis, st.index - 1);
    else if (k === "Escape") app.panels.hideMsg();
    else done = false;
    if (done) { e.preventDefault(); e.stopPropagation(); }
  };
  app.root.addEventListener("keydown", onKey);
  return () => app.root.removeEventListener("keydown", onKey);
}
