// cnnlens explorer: one page, plain JavaScript, nothing loaded from elsewhere.
"use strict";

const state = { info: null, rows: [], total: 0, offset: 0, image: null, concepts: false };
const PAGE = 200;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];
const DEFAULT_METHODS = ["grad-cam", "integrated-gradients", "saliency"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `${response.status} ${response.statusText}`);
  return body;
}

function status(text) { document.getElementById("status").textContent = text; }

function checkboxes(container, names, name, checked) {
  for (const m of names) {
    const box = el("input", { type: "checkbox", name, value: m });
    box.checked = checked.includes(m);
    container.append(el("label", {}, box, " " + m));
  }
}

function chosen(container) {
  return [...container.querySelectorAll("input:checked")].map((b) => b.value);
}

function opacity() { return document.getElementById("opacity").value / 100; }

function applyOpacity() {
  for (const img of document.querySelectorAll("img.overlay")) img.style.opacity = opacity();
}

function viewer(base, overlay, caption, method) {
  const stack = el("div", { class: "stack" },
    el("img", { class: "base", src: base, alt: "image" }),
    el("img", { class: "overlay", src: overlay, alt: method + " map" }));
  const box = el("div", { class: "viewer", "data-method": method }, stack,
    el("div", { class: "caption", text: caption }));
  stack.lastChild.style.opacity = opacity();
  return box;
}

// --- browsing ------------------------------------------------------------------------
async function loadImages(offset) {
  const wrong = document.getElementById("only-wrong").checked;
  const page = await getJSON(`/api/images?offset=${offset}&limit=${PAGE}&wrong=${wrong}`);
  state.rows = page.rows;
  state.total = page.total;
  state.offset = page.offset;
  renderThumbs();
}

function renderThumbs() {
  const list = document.getElementById("images");
  list.replaceChildren();
  for (const row of state.rows) {
    const wrong = row.prediction !== row.target;
    const card = el("div", { class: "thumb" + (wrong ? " wrong" : ""), "data-index": row.image,
                             title: `#${row.image}: ${row.label}, predicted ` +
                                    `${row.predicted_label} (${row.probability.toFixed(2)})` },
      el("img", { src: `/api/images/${row.image}.png`, alt: `image ${row.image}`,
                  loading: "lazy" }),
      el("span", { text: `#${row.image} ${row.predicted_label}` }));
    card.addEventListener("click", () => selectImage(row.image));
    if (row.image === state.image) card.classList.add("selected");
    list.append(card);
  }
  const last = Math.min(state.offset + state.rows.length, state.total);
  document.getElementById("image-count").textContent =
    state.total > state.rows.length ? `(${state.offset + 1}–${last} of ${state.total})`
                                    : `(${state.total})`;
  document.querySelector(".pager").hidden = state.offset === 0 && last >= state.total;
  document.getElementById("prev-page").disabled = state.offset === 0;
  document.getElementById("next-page").disabled = last >= state.total;
}

function selectImage(index) {
  state.image = index;
  for (const t of document.querySelectorAll(".thumb")) {
    t.classList.toggle("selected", Number(t.dataset.index) === index);
  }
  const row = state.rows.find((r) => r.image === index);
  document.getElementById("image-title").textContent =
    `Image #${index}: ${row.label}, predicted ${row.predicted_label} ` +
    `(p = ${row.probability.toFixed(3)})`;
  renderViewers();
  renderCurves();
  renderImageMetrics();
  renderConcepts();
}

function renderViewers() {
  const box = document.getElementById("viewers");
  box.replaceChildren();
  if (state.image === null) return;
  const methods = chosen(document.getElementById("methods"));
  if (!methods.length) box.append(el("p", { class: "meta", text: "Pick a method above." }));
  for (const m of methods) {
    const v = viewer(`/api/images/${state.image}.png`, `/api/maps/${m}/${state.image}.png`,
                     `${m} (computing ...)`, m);
    const overlay = v.querySelector("img.overlay");
    overlay.addEventListener("load", () => {
      v.classList.add("ready");
      v.querySelector(".caption").textContent = m;
    });
    overlay.addEventListener("error", () => {
      v.classList.add("failed");
      v.querySelector(".caption").textContent = `${m}: no map`;
    });
    box.append(v);
  }
}

let curvesRequest = 0;

async function renderCurves() {
  // Two renders may overlap (an image click, then a method change): only the latest one
  // draws, and it replaces the panel's contents at once, so no curve is drawn twice.
  const box = document.getElementById("curves");
  const request = ++curvesRequest;
  box.replaceChildren();
  if (!state.info.metrics.length) return;
  const curves = await getJSON(`/api/curves/${state.image}`).catch(() => ({}));
  if (request !== curvesRequest) return;
  const methods = chosen(document.getElementById("methods"));
  const plots = [];
  for (const [metric, byMethod] of Object.entries(curves)) {
    const shown = Object.entries(byMethod).filter(([m]) => methods.includes(m));
    if (shown.length) plots.push(curvePlot(metric, shown));
  }
  box.replaceChildren(...plots);
}

function curvePlot(metric, series) {
  const W = 300, H = 190, L = 38, B = 28, T = 10, R = 10;
  const plot = svg("svg", { width: W, height: H, "data-metric": metric, role: "img" });
  const ys = series.flatMap(([, c]) => c.y);
  const top = Math.max(1e-9, ...ys), bottom = Math.min(0, ...ys);
  const px = (x) => L + x * (W - L - R);
  const py = (y) => H - B - ((y - bottom) / (top - bottom)) * (H - B - T);
  plot.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  plot.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  const label = (x, y, text, anchor = "middle") => {
    const t = svg("text", { x, y, "text-anchor": anchor });
    t.textContent = text;
    plot.append(t);
  };
  label((L + W - R) / 2, H - 6, `${metric}: fraction of pixels`);
  label(L - 4, T + 8, top.toPrecision(2), "end");
  label(L - 4, H - B, bottom.toPrecision(2), "end");
  label(L, H - B + 12, "0");
  label(W - R, H - B + 12, "1", "end");
  const legend = el("div", { class: "legend" });
  series.forEach(([method, c], k) => {
    const span = Math.max(1e-12, c.x[c.x.length - 1] - c.x[0]);
    const points = c.x.map((x, i) => `${px((x - c.x[0]) / span)},${py(c.y[i])}`).join(" ");
    const color = COLORS[k % COLORS.length];
    plot.append(svg("polyline", { points, fill: "none", stroke: color, "stroke-width": 2,
                                  "data-method": method }));
    const swatch = el("i");
    swatch.style.background = color;
    legend.append(el("span", {}, swatch, method));
  });
  return el("figure", {}, plot, legend);
}

// --- concepts (CRP) ----------------------------------------------------------------
async function setupConcepts() {
  const note = document.getElementById("concept-note");
  const select = document.getElementById("concept-layer");
  if (!state.info.upload.available) {
    note.textContent = `Concepts need the model: ${state.info.upload.problem}.`;
    state.concepts = false;
    return;
  }
  try {
    const found = await getJSON("/api/concepts/layers");
    for (const l of found.layers) {
      const shape = l.shape ? ` (${l.shape.join("×")})` : "";
      select.append(el("option", { value: l.name, text: l.name + shape }));
    }
    select.value = found.default;
    state.concepts = true;
  } catch (e) {
    conceptError(e.message);
    state.concepts = false;
    return;
  }
  select.addEventListener("change", renderConcepts);
  document.getElementById("concept-top").addEventListener("change", renderConcepts);
}

function conceptError(message) {
  const error = document.getElementById("concept-error");
  error.textContent = message;
  error.hidden = false;
  document.getElementById("concepts").dataset.state = "failed";
}

async function renderConcepts() {
  const box = document.getElementById("concepts");
  const note = document.getElementById("concept-note");
  box.replaceChildren();
  document.getElementById("concept-error").hidden = true;
  if (!state.concepts || state.image === null) return;
  const index = state.image;
  const request = state.conceptRequest = (state.conceptRequest ?? 0) + 1;
  const stale = () => request !== state.conceptRequest;  // a newer choice replaced this one
  const layer = document.getElementById("concept-layer").value;
  const top = document.getElementById("concept-top").value;
  box.dataset.state = "loading";
  note.textContent = `finding the concepts of image #${index} at ${layer} ...`;
  let out;
  try {
    out = await getJSON(`/api/concepts/${index}?layer=${encodeURIComponent(layer)}&top=${top}`);
  } catch (e) {
    if (stale()) return;
    note.textContent = "";
    conceptError(e.message);
    return;
  }
  if (stale()) return;
  const base = `/api/images/${index}.png`;
  const label = state.info.classes[out.target] ?? out.target;
  note.textContent = `The ${out.concepts.length} channels of ${out.layer} (of ${out.channels}) ` +
    `that carry the most LRP relevance for ${label}, each with its conditional heatmap (the ` +
    "relevance that flows through that channel alone) and, below, its reference crops: " +
    `where it carries the most relevance among the first ${out.references} images.`;
  box.append(el("div", { class: "concept", "data-channel": "all" },
    viewer(base, out.lrp, `LRP for ${label}`, "lrp")));
  for (const c of out.concepts) {
    const share = c.share === null ? "" : ` · ${(100 * c.share).toFixed(0)} %`;
    const crops = el("div", { class: "crops" });
    for (const crop of c.crops) {
      crops.append(el("img", { src: crop.png, alt: `image ${crop.image}`,
        title: `image #${crop.image}, relevance ${crop.relevance.toPrecision(3)}` }));
    }
    box.append(el("div", { class: "concept", "data-channel": c.channel },
      viewer(base, c.map, `channel #${c.channel}${share}`, `channel-${c.channel}`), crops));
  }
  box.dataset.state = "ready";
}

// --- metric tables -------------------------------------------------------------------
function sortableTable(columns, rows, id) {
  const table = el("table", { id });
  const head = el("tr");
  const body = el("tbody");
  const draw = () => {
    body.replaceChildren(...rows.map((r) => el("tr", {}, ...columns.map((c) => {
      const v = r[c];
      return el("td", { text: typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(4))
                                                     : (v ?? "–") });
    }))));
  };
  columns.forEach((c) => {
    const th = el("th", { text: c, "data-key": c });
    th.addEventListener("click", () => {
      const asc = !th.classList.contains("sorted-asc");
      head.querySelectorAll("th").forEach((h) => h.classList.remove("sorted-asc", "sorted-desc"));
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      rows.sort((a, b) => {
        const x = a[c], y = b[c];
        const order = typeof x === "number" && typeof y === "number" ? x - y
          : String(x).localeCompare(String(y));
        return asc ? order : -order;
      });
      draw();
    });
    head.append(th);
  });
  table.append(el("thead", {}, head), body);
  draw();
  return table;
}

function pivot(rows, metrics, value) {
  const byMethod = new Map();
  for (const r of rows) {
    if (!byMethod.has(r.method)) byMethod.set(r.method, { method: r.method });
    byMethod.get(r.method)[r.metric] = r[value];
  }
  return [...byMethod.values()];
}

async function renderMetrics() {
  const box = document.getElementById("metrics");
  if (!state.info.metrics.length) {
    box.replaceChildren(el("p", { class: "meta",
      text: "No metrics here: a store written by cnnlens run has them." }));
    return;
  }
  const data = await getJSON("/api/metrics");
  const metrics = state.info.metrics;
  const rows = pivot(data.summary, metrics, "mean");
  for (const r of data.summary) {
    const row = rows.find((x) => x.method === r.method);
    row[r.metric + " ±95%"] = r.ci95;
    row.images = Math.max(row.images ?? 0, r.images);
  }
  const columns = ["method", ...metrics.flatMap((m) => [m, m + " ±95%"]), "images"];
  box.replaceChildren(sortableTable(columns, rows, "metrics-table"));
}

async function renderImageMetrics() {
  const box = document.getElementById("image-metrics");
  box.replaceChildren();
  if (!state.info.metrics.length) return;
  const index = state.image;
  const data = await getJSON(`/api/metrics/${index}`).catch(() => ({ rows: [] }));
  if (index !== state.image || !data.rows.length) return;
  box.replaceChildren(el("h3", { class: "meta", text: "This image" }),
    sortableTable(["method", ...state.info.metrics], pivot(data.rows, state.info.metrics, "value"),
                  "image-metrics-table"));
}

// --- upload ----------------------------------------------------------------------------
async function upload(event) {
  event.preventDefault();
  const error = document.getElementById("upload-error");
  const result = document.getElementById("upload-result");
  const file = document.getElementById("upload-file").files[0];
  error.hidden = true;
  result.replaceChildren();
  if (!file) { error.textContent = "Choose a PNG or JPEG file first."; error.hidden = false; return; }
  const limit = state.info.upload.max_mb * 1e6;
  if (file.size > limit) {
    error.textContent = `${file.name} is ${(file.size / 1e6).toFixed(1)} MB; the limit is ` +
                        `${state.info.upload.max_mb} MB.`;
    error.hidden = false;
    return;
  }
  const form = new FormData();
  form.append("image", file);
  form.append("methods", chosen(document.getElementById("upload-methods")).join(","));
  const button = document.getElementById("upload-go");
  button.disabled = true;
  status("explaining the upload ...");
  try {
    const out = await getJSON("/api/explain", { method: "POST", body: form });
    const best = out.top[0];
    result.append(el("p", { class: "top", text: `Predicted ${best.label} (p = ` +
      `${best.probability.toFixed(3)}); maps for ${out.target_label}. Top: ` +
      out.top.map((t) => `${t.label} ${t.probability.toFixed(2)}`).join(", ") }));
    const row = el("div", { class: "viewers" });
    for (const [m, entry] of Object.entries(out.maps)) row.append(viewer(out.image, entry.png,
      `${m} (${entry.seconds.toFixed(2)} s)`, m));
    for (const [m, message] of Object.entries(out.errors)) {
      row.append(el("p", { class: "error", text: `${m}: ${message}` }));
    }
    result.append(row);
    status("");
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
    status("");
  } finally {
    button.disabled = false;
  }
}

// --- report ----------------------------------------------------------------------------
function renderReport() {
  const section = document.getElementById("report-section");
  const select = document.getElementById("report-sections");
  const frame = document.getElementById("report-frame");
  if (!state.info.report.available) {
    section.replaceChildren(el("h2", { text: "Model report" }),
      el("p", { class: "meta", text: "No report.html next to this run or store." }));
    return;
  }
  select.append(el("option", { value: "", text: "(whole report)" }));
  for (const s of state.info.report.sections) select.append(el("option", { value: s.key,
                                                                          text: s.title }));
  select.addEventListener("change", () => { frame.src = "/report#" + select.value; });
  frame.src = "/report";
}

async function main() {
  state.info = await getJSON("/api/info");
  const info = state.info;
  document.getElementById("source").textContent =
    `${info.title} · ${info.images} images · ${info.classes.length} classes`;
  const defaults = (names) => {
    const picked = DEFAULT_METHODS.filter((m) => names.includes(m));
    return picked.length ? picked.slice(0, 2) : names.slice(0, 1);
  };
  checkboxes(document.getElementById("methods"), info.methods, "method", defaults(info.methods));
  document.getElementById("methods").addEventListener("change", () => {
    renderViewers();
    if (state.image !== null) renderCurves();
  });
  document.getElementById("opacity").addEventListener("input", applyOpacity);
  document.getElementById("only-wrong").addEventListener("change", () => loadImages(0));
  document.getElementById("prev-page").addEventListener("click",
    () => loadImages(Math.max(0, state.offset - PAGE)));
  document.getElementById("next-page").addEventListener("click",
    () => loadImages(state.offset + PAGE));
  const note = document.getElementById("upload-note");
  if (info.upload.available) {
    note.textContent = `PNG or JPEG, at most ${info.upload.max_mb} MB; resized to the model's ` +
                       "input size and normalised as in training.";
    checkboxes(document.getElementById("upload-methods"), info.upload.methods, "upload-method",
               defaults(info.upload.methods));
    document.getElementById("upload-form").addEventListener("submit", upload);
  } else {
    note.textContent = `Uploads cannot be explained here: ${info.upload.problem}.`;
    document.getElementById("upload-form").hidden = true;
  }
  renderReport();
  await setupConcepts();
  await loadImages(0);
  await renderMetrics();
  if (state.rows.length) selectImage(state.rows[0].image);
  document.body.dataset.ready = "true";
}

main().catch((e) => { status("error: " + e.message); });
