// keymodels explorer: one page for every run the server was started with.
// Vanilla JS on purpose: the page must work offline, with nothing fetched but our own API.
"use strict";

const $ = (id) => document.getElementById(id);

// Everything the page knows; rendering functions read from here.
const state = {
  card: null,       // the selected run's model card (GET /api/runs/{run})
  image: null,      // {form, predict, picture, explainCache} for the current image
  patch: null,      // selected patch index (row-major) for the "patch" view
  translation: null,
  seq: 0,           // request counter: a slow response for an old input must not overwrite a newer one
  mapSeq: 0,        // the same for map redraws (an /explain answer may arrive after a newer choice)
};

/* ------------------------------------------------------------------ API */

let pending = 0;

// The one door to the server: JSON in/out, and any {"error": ...} goes to the banner.
// Returns the parsed body, or null after showing the error (callers just stop on null).
async function api(path, options = {}) {
  setBusy(+1);
  try {
    const response = await fetch(path, options);
    const body = await readJson(response);
    if (!response.ok) {
      showError(body && body.error ? body.error : `${response.status} ${response.statusText}`);
      return null;
    }
    clearError();
    return body;
  } catch (err) {
    showError(`Cannot reach the server: ${err.message}`);
    return null;
  } finally {
    setBusy(-1);
  }
}

// FastAPI can answer non-JSON (a proxy's HTML page, an empty 502): never crash on it.
async function readJson(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return { error: text.trim().slice(0, 300) || `${response.status} ${response.statusText}` };
  }
}

const runPath = (suffix = "") => `api/runs/${encodeURIComponent(state.card.name)}${suffix}`;

function showError(message) {
  const banner = $("error");
  banner.textContent = message;
  banner.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setBusy(delta) {
  pending += delta;
  $("busy").hidden = pending <= 0;
}

/* ------------------------------------------------------------ helpers */

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") node.style.cssText = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

function fillSelect(select, options, value) {
  select.replaceChildren(...options.map(([v, label]) => el("option", { value: v, text: label })));
  if (value !== undefined) select.value = String(value);
}

const range = (n) => Array.from({ length: n }, (_, i) => i);
const pct = (p) => `${(100 * p).toFixed(p >= 0.1 ? 1 : 2)}%`;

function fmtNumber(value) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value === "number" && !Number.isInteger(value)) return String(Number(value.toPrecision(4)));
  if (typeof value === "number") return value.toLocaleString("en-US");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// Mean over the first axis of a list of equally shaped 2-D arrays (heads → one map).
function meanMaps(maps) {
  return maps[0].map((row, i) =>
    row.map((_, j) => maps.reduce((sum, m) => sum + m[i][j], 0) / maps.length));
}

// Jet-like colormap: blue → cyan → yellow → red, t in [0, 1].
function jet(t) {
  const clamp = (x) => Math.max(0, Math.min(1, x));
  const r = clamp(1.5 - Math.abs(4 * t - 3));
  const g = clamp(1.5 - Math.abs(4 * t - 2));
  const b = clamp(1.5 - Math.abs(4 * t - 1));
  return [Math.round(255 * r), Math.round(255 * g), Math.round(255 * b)];
}

/* -------------------------------------------------------- runs & card */

async function loadRuns() {
  const body = await api("api/runs");
  if (!body) return;
  const runs = body.runs || [];
  fillSelect($("run"), runs.map((r) => [r.name, `${r.name} (${r.kind})`]));
  // Keep the run in the URL so a reload or a shared link opens the same one.
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (runs.some((r) => r.name === wanted)) $("run").value = wanted;
  if (runs.length) await selectRun($("run").value);
  else showError("The server has no runs to show.");
}

async function selectRun(name) {
  const card = await api(`api/runs/${encodeURIComponent(name)}`);
  if (!card) return;
  state.card = card;
  state.image = null;
  state.translation = null;
  state.patch = null;
  state.seq += 1;  // drop answers still on their way for the previous run
  history.replaceState(null, "", `#${encodeURIComponent(name)}`);

  $("kind").textContent = card.kind;
  $("kind").hidden = false;
  $("run-title").textContent = card.title || card.model || "";
  $("image-panel").hidden = card.kind !== "image";
  $("translation-panel").hidden = card.kind !== "translation";
  renderCard(card);
  if (card.kind === "image") setupImagePanel(card);
  else setupTranslationPanel(card);
}

function renderCard(card) {
  $("card").hidden = false;
  $("card-name").textContent = card.name;
  const acc = card.accuracy || {};
  const facts = [
    ["Model", card.model],
    ["Parameters", fmtNumber(card.parameters)],
    ["Precision", card.precision],
    ["Val accuracy", acc.val_acc == null ? "–" : pct(acc.val_acc)],
    ["Test accuracy", acc.test_acc == null ? "–" : pct(acc.test_acc)],
  ];
  if (card.epoch != null) facts.push(["Best epoch", card.epoch]);
  if (card.kind === "image") {
    facts.push(["Input", `${card.img_size.join("×")} × ${card.in_chans} ch, grid ${card.grid.join("×")}`]);
  } else {
    facts.push(["Architecture", card.arch], ["Vocabulary", card.vocab]);
    facts.push(["Max source tokens", card.max_source_tokens]);
  }
  facts.push(["Layers × heads", `${card.layers} × ${card.heads}`]);
  $("card-facts").replaceChildren(
    ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: fmtNumber(v) })]));
  $("card-readout").textContent = card.readout ? `Rollout read from: ${card.readout}` : "";
  fillConfigTable($("card-config"), card.config);
  $("card-train-wrap").hidden = !card.train_config;
  if (card.train_config) fillConfigTable($("card-train"), card.train_config);
  drawCurves(card.curves);
}

function fillConfigTable(table, config) {
  const rows = Object.entries(config || {}).map(([key, value]) =>
    el("tr", {}, el("th", { text: key }), el("td", { text: fmtNumber(value) })));
  table.replaceChildren(...rows);
}

/* ------------------------------------------------------ training curves */

// Two small plots stacked: losses (top) and accuracies (bottom), each over epochs.
function drawCurves(curves) {
  const canvas = $("curves");
  const rows = (curves && curves.rows) || [];
  const columns = (curves && curves.columns) || [];
  $("curves-wrap").hidden = rows.length === 0;
  if (!rows.length) return;

  const x = columns.indexOf("epoch");
  const xs = rows.map((r, i) => (x >= 0 ? Number(r[x]) : i + 1));
  const series = (test) => columns
    .map((name, i) => ({ name, values: rows.map((r) => toNumber(r[i])) }))
    .filter((s) => s.name !== "epoch" && test(s.name) && s.values.some(Number.isFinite));

  // Draw at the displayed size (times the pixel ratio) so the text stays sharp and readable.
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 340;
  const height = 300;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const half = height / 2;
  plotPanel(ctx, { x: 0, y: 0, w: width, h: half }, "loss", xs, series((n) => /loss/i.test(n)));
  plotPanel(ctx, { x: 0, y: half, w: width, h: half }, "accuracy", xs, series((n) => /acc/i.test(n)));
}

const fmtTick = (v) => (Number.isInteger(v) ? String(v) : v.toPrecision(3));
const toNumber = (v) => (v === null || v === "" || v === undefined ? NaN : Number(v));
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

function plotPanel(ctx, box, title, xs, series) {
  const pad = { l: 42, r: 10, t: 22, b: 34 };
  const plot = { x: box.x + pad.l, y: box.y + pad.t, w: box.w - pad.l - pad.r, h: box.h - pad.t - pad.b };
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = "#334155";
  ctx.fillText(title, plot.x, box.y + 14);
  if (!series.length) {
    ctx.fillStyle = "#94a3b8";
    ctx.fillText("no data", plot.x + plot.w / 2 - 20, plot.y + plot.h / 2);
    return;
  }
  const values = series.flatMap((s) => s.values.filter(Number.isFinite));
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  // Accuracies read best on their whole 0..1 scale; a flat loss line still needs a y-range.
  if (title === "accuracy" && lo >= 0 && hi <= 1) { lo = 0; hi = 1; }
  if (hi === lo) { lo -= 0.5; hi += 0.5; }
  let x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  if (x1 === x0) { x0 -= 1; x1 += 1; }  // one epoch: its point in the middle, not on the frame
  const px = (v) => plot.x + ((v - x0) / (x1 - x0)) * plot.w;
  const py = (v) => plot.y + plot.h - ((v - lo) / (hi - lo)) * plot.h;

  drawAxes(ctx, plot, { lo, hi, x0, x1 });
  let legendX = plot.x;
  series.forEach((s, k) => {
    ctx.strokeStyle = ctx.fillStyle = PALETTE[k % PALETTE.length];
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    s.values.forEach((v, i) => {
      if (!Number.isFinite(v)) return;
      if (started) ctx.lineTo(px(xs[i]), py(v));
      else { ctx.moveTo(px(xs[i]), py(v)); started = true; }
    });
    ctx.stroke();
    // One epoch is a single point: draw dots so it is visible at all.
    s.values.forEach((v, i) => {
      if (Number.isFinite(v)) { ctx.beginPath(); ctx.arc(px(xs[i]), py(v), 2.5, 0, 2 * Math.PI); ctx.fill(); }
    });
    // Legend: one row under the plot, a colour swatch and the column's name per series.
    ctx.fillRect(legendX, box.y + box.h - 11, 10, 3);
    ctx.fillText(s.name, legendX + 14, box.y + box.h - 6);
    legendX += 24 + ctx.measureText(s.name).width;
  });
}

function drawAxes(ctx, plot, { lo, hi, x0, x1 }) {
  ctx.strokeStyle = "#cbd5e1";
  ctx.lineWidth = 1;
  ctx.strokeRect(plot.x, plot.y, plot.w, plot.h);
  ctx.fillStyle = "#64748b";
  ctx.font = "10px system-ui, sans-serif";
  ctx.fillText(fmtTick(hi), plot.x - 38, plot.y + 8);
  ctx.fillText(fmtTick(lo), plot.x - 38, plot.y + plot.h);
  ctx.fillText(`epoch ${x0}`, plot.x, plot.y + plot.h + 12);
  const last = `${x1}`;
  ctx.fillText(last, plot.x + plot.w - ctx.measureText(last).width, plot.y + plot.h + 12);
  ctx.font = "12px system-ui, sans-serif";
}

/* ---------------------------------------------------------- image runs */

function setupImagePanel(card) {
  $("image-results").hidden = true;
  $("upload").value = "";
  const samples = card.samples || [];
  fillSelect($("samples"), [["", samples.length ? "— choose a sample —" : "(no samples)"],
    ...samples.map((s) => [s, s])], "");
  $("samples").disabled = !samples.length;

  fillSelect($("view"), [["rollout", "attention rollout"], ["heads", "one layer's heads"],
    ["grad-rollout", "gradient rollout (per class)"], ["patch", "from a patch"]], "rollout");
  fillSelect($("layer"), range(card.layers).map((i) => [i, `${i}`]), card.layers - 1);
  fillSelect($("head"), [["", "mean"], ...range(card.heads).map((i) => [i, `${i}`])], "");
  fillSelect($("class"), [["", "predicted"], ...card.classes.map((c, i) => [i, c])], "");
  $("map-controls").hidden = !card.has_attention;
  // A headless model has no classes: gradient rollout needs a class score to differentiate.
  $("view").querySelector('option[value="grad-rollout"]').disabled = !card.has_head;
  syncControls();
}

// Show only the selectors that mean something for the current view.
function syncControls() {
  const view = $("view").value;
  for (const label of document.querySelectorAll("#map-controls [data-for]")) {
    label.hidden = !label.dataset.for.split(" ").includes(view);
  }
}

async function predict(form) {
  const seq = ++state.seq;
  form.append("top_k", String(Math.min(5, Math.max(1, state.card.classes.length))));
  const body = await api(runPath("/predict"), { method: "POST", body: form });
  if (seq !== state.seq) return;  // a newer image (or another run) took over meanwhile
  if (!body) {
    // Keep no stale result on screen: it would look like the answer for the rejected file.
    $("image-results").hidden = true;
    state.image = null;
    return;
  }
  const picture = await loadPicture(body.input);
  if (seq !== state.seq) return;
  state.image = { form, predict: body, picture, explainCache: new Map() };
  state.patch = null;
  $("image-results").hidden = false;
  renderTopk(body.top || []);
  updateClassLabel(body.top || []);
  await renderMap();
}

function loadPicture(src) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => resolve(null);  // the map is still worth showing without its backdrop
    img.src = src;
  });
}

// A fresh FormData with the current image (file or sample name), for /explain.
function imageForm() {
  const form = new FormData();
  for (const key of ["image", "sample"]) {
    if (state.image.form.has(key)) form.append(key, state.image.form.get(key));
  }
  return form;
}

function renderTopk(top) {
  $("no-head").hidden = top.length > 0 || state.card.has_head !== false;
  $("topk").replaceChildren(...top.map((t, i) => el("li", { class: i === 0 ? "best" : "" },
    el("span", { class: "label", text: t.class }),
    el("span", { class: "bar" }, el("span", { class: "fill", style: `width:${(100 * t.prob).toFixed(1)}%` })),
    el("span", { class: "prob", text: pct(t.prob) }))));
}

function updateClassLabel(top) {
  const first = $("class").options[0];
  first.textContent = top.length ? `predicted (${top[0].class})` : "predicted";
}

/* --------------------------------------------------------- map drawing */

// What to draw for the current controls: {map, caption}, from /predict locally when
// it can, else from POST /explain. Returns null when the request failed.
async function currentMap() {
  const view = $("view").value;
  const { predict: p } = state.image;
  const layer = Number($("layer").value);
  const head = $("head").value;
  if (view === "rollout") return { map: p.rollout, caption: "Attention rollout over all layers." };
  if (view === "heads") {
    const maps = p.heads[layer];
    const map = head === "" ? meanMaps(maps) : maps[Number(head)];
    const who = head === "" ? "mean of heads" : `head ${head}`;
    return { map, caption: `Class-token attention, layer ${layer}, ${who}.` };
  }
  if (view === "patch" && state.patch === null) {
    return { map: null, caption: "Click a patch on the image to see where it looks." };
  }
  const form = imageForm();
  form.append("method", view);
  if (view === "grad-rollout") {
    if ($("class").value !== "") form.append("class_index", $("class").value);
  } else {
    form.append("layer", String(layer));
    form.append("head", head);
    form.append("patch", String(state.patch));
  }
  const body = await cachedExplain(form);
  if (!body) return null;
  const caption = view === "grad-rollout"
    ? `Gradient-weighted rollout for class “${body.class}”.`
    : `Where patch ${state.patch} looks in layer ${layer} (${head === "" ? "mean of heads" : `head ${head}`}).`;
  return { map: body.map, caption };
}

// The same question about the same image gets the same answer: ask the server once.
async function cachedExplain(form) {
  const key = [...form.entries()].filter(([k]) => k !== "image").map(([k, v]) => `${k}=${v}`).join("&");
  const cache = state.image.explainCache;
  if (!cache.has(key)) {
    const body = await api(runPath("/explain"), { method: "POST", body: form });
    if (!body) return null;
    cache.set(key, body);
  }
  return cache.get(key);
}

async function renderMap() {
  const canvas = $("overlay");
  canvas.dataset.ready = "0";
  syncControls();
  const seq = state.seq;
  const mapSeq = ++state.mapSeq;
  const wanted = state.card.has_attention ? await currentMap() : { map: null, caption: "" };
  if (seq !== state.seq || mapSeq !== state.mapSeq || !state.image || !wanted) return;
  drawOverlay(canvas, state.image.picture, wanted.map);
  $("map-caption").textContent = wanted.caption;
  const view = state.card.has_attention ? $("view").value : "input";
  const perLayer = view === "heads" || view === "patch";
  canvas.dataset.view = view;
  canvas.dataset.layer = perLayer ? $("layer").value : "";
  canvas.dataset.head = perLayer ? $("head").value : "";
  canvas.dataset.patch = view === "patch" && state.patch !== null ? String(state.patch) : "";
  canvas.dataset.ready = "1";  // the browser test waits on this
}

// Input picture scaled up without smoothing (pixels stay crisp), map blended on top.
function drawOverlay(canvas, picture, map) {
  const [gh, gw] = state.card.grid;
  const [H, W] = state.card.img_size;
  canvas.width = 320;
  canvas.height = Math.round((320 * H) / W);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "#0f172a";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (picture) ctx.drawImage(picture, 0, 0, canvas.width, canvas.height);
  if (map) {
    ctx.globalAlpha = Number($("opacity").value) / 100;
    ctx.drawImage(heatmap(map), 0, 0, canvas.width, canvas.height);
    ctx.globalAlpha = 1;
  }
  if ($("view").value === "patch" && state.patch !== null) {
    const cw = canvas.width / gw;
    const ch = canvas.height / gh;
    const row = Math.floor(state.patch / gw);
    const col = state.patch % gw;
    ctx.lineWidth = 3;
    ctx.strokeStyle = "#ffffff";
    ctx.strokeRect(col * cw + 1.5, row * ch + 1.5, cw - 3, ch - 3);
    ctx.lineWidth = 1;
    ctx.strokeStyle = "#000000";
    ctx.strokeRect(col * cw + 0.5, row * ch + 0.5, cw - 1, ch - 1);
  }
}

// One pixel per patch, min→max scaled through the jet colormap; drawn scaled up later.
function heatmap(map) {
  const gh = map.length;
  const gw = map[0].length;
  const flat = map.flat();
  const lo = Math.min(...flat);
  const span = Math.max(...flat) - lo || 1;  // a uniform map shows as all-blue, not NaN
  const small = document.createElement("canvas");
  small.width = gw;
  small.height = gh;
  const ctx = small.getContext("2d");
  const pixels = ctx.createImageData(gw, gh);
  flat.forEach((v, i) => {
    const [r, g, b] = jet((v - lo) / span);
    pixels.data.set([r, g, b, 255], 4 * i);
  });
  ctx.putImageData(pixels, 0, 0);
  return small;
}

// Canvas click → row-major patch index under the cursor, then show where that patch looks.
function onOverlayClick(event) {
  if (!state.image || !state.card.has_attention) return;
  const canvas = $("overlay");
  const rect = canvas.getBoundingClientRect();
  const [gh, gw] = state.card.grid;
  const col = Math.min(gw - 1, Math.floor(((event.clientX - rect.left) / rect.width) * gw));
  const row = Math.min(gh - 1, Math.floor(((event.clientY - rect.top) / rect.height) * gh));
  if (col < 0 || row < 0) return;
  state.patch = row * gw + col;
  $("view").value = "patch";
  renderMap();
}

/* ---------------------------------------------------- translation runs */

function setupTranslationPanel(card) {
  $("translation-results").hidden = true;
  const examples = card.examples || [];
  $("examples").replaceChildren(...examples.map((text) => el("button", {
    type: "button", class: "chip", text, onclick: () => { $("source").value = text; translate(); },
  })));
  if (!$("source").value && examples.length) $("source").placeholder = `e.g. ${examples[0]}`;
  const transformer = card.arch === "transformer";
  $("t-controls").hidden = !transformer;
  fillSelect($("t-layer"), range(card.layers).map((i) => [i, `${i}`]), card.layers - 1);
  fillSelect($("t-head"), [["", "mean"], ...range(card.heads).map((i) => [i, `${i}`])], "");
}

async function translate() {
  const seq = ++state.seq;
  const payload = {
    text: $("source").value,
    beam: Number($("beam").value) || 5,
    n_best: Number($("nbest").value) || 3,
  };
  $("translate").disabled = true;
  const body = await api(runPath("/translate"), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
  $("translate").disabled = false;
  if (seq !== state.seq) return;
  if (!body) {
    $("translation-results").hidden = true;
    return;
  }
  state.translation = body;
  renderTranslation(body);
}

function renderTranslation(result) {
  $("translation-results").hidden = false;
  $("translation").textContent = result.translation || "(empty)";
  const notes = [];
  if (result.unknown && result.unknown.length) notes.push(`unknown words: ${result.unknown.join(", ")}`);
  if (result.truncated) notes.push("the source was truncated to the model's maximum length");
  $("translation-notes").textContent = notes.join(" · ");
  $("nbest-list").replaceChildren(...(result.n_best || []).map((h) => el("li", {},
    el("span", { class: "text", text: h.text }),
    el("span", { class: "score", text: h.score.toFixed(3) }))));
  renderAlignment();
}

// The matrix for the current selectors: one layer's head, or the mean over heads.
function currentAlignment() {
  const t = state.translation;
  if (state.card.arch !== "transformer" || !t.cross_attention) return t.attention;
  const heads = t.cross_attention[Number($("t-layer").value)];
  const head = $("t-head").value;
  return head === "" ? meanMaps(heads) : heads[Number(head)];
}

function renderAlignment() {
  const t = state.translation;
  const matrix = currentAlignment();
  const header = el("tr", {}, el("th", { class: "corner" }),
    ...t.source_tokens.map((tok, j) => el("th", { class: "src", text: tok, "data-col": j })));
  const rows = t.target_tokens.map((tok, i) => el("tr", {},
    el("th", { class: "tgt", text: tok, "data-row": i }),
    ...matrix[i].map((w, j) => alignmentCell(w, i, j))));
  $("alignment").replaceChildren(el("thead", {}, header), el("tbody", {}, ...rows));
  const table = $("alignment");
  table.dataset.layer = $("t-layer").value;
  table.dataset.head = $("t-head").value;
  $("hover-info").textContent = "Hover a cell to see its weight.";
}

function alignmentCell(weight, row, col) {
  // Attention rows sum to 1, so the weight itself is a fine 0..1 shade.
  const cell = el("td", { "data-row": row, "data-col": col, "data-weight": weight.toFixed(4) });
  cell.style.backgroundColor = `rgba(37, 99, 235, ${Math.max(0, Math.min(1, weight)).toFixed(3)})`;
  return cell;
}

// Hover a cell: light up its target row and source column and say the weight.
// Hover a target (source) token: light up its whole row (column).
function onAlignmentHover(event) {
  clearHighlight();
  const target = event.target.closest("td, th.tgt, th.src");
  if (!target || !state.translation) return;
  const { row, col } = target.dataset;
  const t = state.translation;
  const table = $("alignment");
  if (target.matches("th.tgt")) {
    table.querySelectorAll(`[data-row="${row}"]`).forEach((n) => n.classList.add("hl"));
    $("hover-info").textContent = `target “${t.target_tokens[row]}”: its attention over the source`;
    return;
  }
  if (target.matches("th.src")) {
    table.querySelectorAll(`[data-col="${col}"]`).forEach((n) => n.classList.add("hl"));
    $("hover-info").textContent = `source “${t.source_tokens[col]}”: what attends to it`;
    return;
  }
  target.classList.add("active");
  table.querySelector(`th.tgt[data-row="${row}"]`).classList.add("hl");
  table.querySelector(`th.src[data-col="${col}"]`).classList.add("hl");
  $("hover-info").textContent =
    `“${t.target_tokens[row]}” ← “${t.source_tokens[col]}”: weight ${Number(target.dataset.weight).toFixed(3)}`;
}

function clearHighlight() {
  $("alignment").querySelectorAll(".hl, .active").forEach((n) => n.classList.remove("hl", "active"));
}

/* -------------------------------------------------------------- wiring */

function wire() {
  $("run").addEventListener("change", (e) => selectRun(e.target.value));
  $("error").addEventListener("click", clearError);

  $("upload").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (!file) return;
    $("samples").value = "";
    const form = new FormData();
    form.append("image", file, file.name);
    predict(form);
  });
  $("samples").addEventListener("change", (e) => {
    if (!e.target.value) return;
    $("upload").value = "";
    const form = new FormData();
    form.append("sample", e.target.value);
    predict(form);
  });
  for (const id of ["view", "layer", "head", "class"]) {
    $(id).addEventListener("change", () => state.image && renderMap());
  }
  // Blending is pure drawing: redraw on every slider step without asking the server again.
  $("opacity").addEventListener("input", () => state.image && renderMap());
  $("overlay").addEventListener("click", onOverlayClick);

  $("translate").addEventListener("click", translate);
  $("source").addEventListener("keydown", (e) => {
    // Enter translates (Shift+Enter still makes a new line).
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); translate(); }
  });
  for (const id of ["t-layer", "t-head"]) {
    $(id).addEventListener("change", () => state.translation && renderAlignment());
  }
  $("alignment").addEventListener("mouseover", onAlignmentHover);
  $("alignment").addEventListener("mouseleave", () => {
    clearHighlight();
    $("hover-info").textContent = "Hover a cell to see its weight.";
  });
}

wire();
loadRuns();
