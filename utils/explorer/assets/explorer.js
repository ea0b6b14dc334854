"use strict";
// explorer.html: attention, and the steps that make it, from one run's activation cache.
// Everything is drawn from the JSON in <script id="explorer-data">; the page fetches nothing.
// This file: the data, the pickers, the head view and the model view; steps.js: the step view,
// the head's analysis and the training evolution.

const DATA = JSON.parse(document.getElementById("explorer-data").textContent);
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
const DRAW_MIN = 0.005; // head view: weights below this draw no line (the step view lists them all)
const ROW = 18; // head view: pixels per token

// --- tensors: {shape, dtype, b64} little-endian float32 ("f4") or float16 ("f2") -----------------

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
  if (exponent === 0) return sign * Math.pow(2, -14) * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * Math.pow(2, exponent - 15) * (1 + fraction / 1024);
}

function tensor(p) {
  if (!p) return null;
  if (!p.decoded) {
    const bytes = Uint8Array.from(atob(p.b64), (c) => c.charCodeAt(0));
    let values;
    if (p.dtype === "f4") values = new Float32Array(bytes.buffer);
    else values = Float32Array.from(new Uint16Array(bytes.buffer), halfToFloat);
    Object.defineProperty(p, "decoded", { value: { shape: p.shape, values }, enumerable: false });
  }
  return p.decoded;
}

// (H, T, X) -> row i of head h, as a plain array of X numbers
function row(t, h, i) {
  const [, T, X] = t.shape;
  const start = (h * T + i) * X;
  return Array.from(t.values.subarray(start, start + X));
}

function matrix(t, h) {
  return Array.from({ length: t.shape[1] }, (_, i) => row(t, h, i));
}

function fixed(x, digits) {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}

function element(tag, attributes = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attributes)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

function svgElement(tag, attributes = {}) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attributes)) e.setAttribute(k, v);
  return e;
}

// white -> blue for weights in [0, 1]
function blue(w) {
  const x = Math.max(0, Math.min(1, w));
  return [Math.round(255 - 219 * x), Math.round(255 - 152 * x), Math.round(255 - 41 * x)];
}

function heatmap(canvas, weights, cell) {
  const T = weights.length, S = T ? weights[0].length : 0;
  canvas.width = Math.max(1, S * cell);
  canvas.height = Math.max(1, T * cell);
  const ctx = canvas.getContext("2d");
  for (let i = 0; i < T; i++) {
    for (let j = 0; j < S; j++) {
      const [r, g, b] = blue(weights[i][j]);
      ctx.fillStyle = `rgb(${r},${g},${b})`;
      ctx.fillRect(j * cell, i * cell, cell, cell);
    }
  }
}

// --- what is chosen --------------------------------------------------------------------------------

const kinds = [...new Set(DATA.modules.map((m) => m.kind))];
const opening = DATA.modules.find((m) => m.name === DATA.tracked) || DATA.modules[0];
const state = { example: 0, kind: opening.kind, layer: opening.layer, heads: new Set([0]), stepHead: 0, query: 0 };

function chosenName() {
  const m = DATA.modules.find((m) => m.kind === state.kind && m.layer === state.layer);
  return m ? m.name : DATA.modules[0].name;
}

function chosenRecord() {
  return DATA.examples[state.example].modules[chosenName()];
}

function fillSelect(select, options, value) {
  select.replaceChildren(...options.map(([v, label]) => element("option", { value: v }, label)));
  select.value = String(value);
}

function buildControls() {
  const examples = document.getElementById("example-select");
  fillSelect(examples, DATA.examples.map((e, i) => [i, `${i + 1}: ${e.label.slice(0, 80)}`]), 0);
  examples.onchange = () => { state.example = +examples.value; state.query = 0; render(); };
  const kind = document.getElementById("kind-select");
  fillSelect(kind, kinds.map((k) => [k, k]), state.kind);
  kind.onchange = () => { state.kind = kind.value; state.query = 0; render(); };
  const layer = document.getElementById("layer-select");
  fillSelect(layer, Array.from({ length: DATA.layers }, (_, l) => [l, `layer ${l}`]), state.layer);
  layer.onchange = () => { state.layer = +layer.value; render(); };
  const toggles = document.getElementById("head-toggles");
  for (let h = 0; h < DATA.heads; h++) {
    const b = element("button", { class: "head-toggle", "data-head": h, style: `--c:${COLOURS[h % 16]}` }, `${h}`);
    b.onclick = () => {
      if (state.heads.has(h) && state.heads.size > 1) state.heads.delete(h); else state.heads.add(h);
      state.stepHead = state.heads.has(state.stepHead) ? state.stepHead : h;
      render();
    };
    toggles.append(b);
  }
  document.getElementById("all-heads").onclick = () => {
    state.heads = new Set(Array.from({ length: DATA.heads }, (_, h) => h));
    render();
  };
}

function syncControls() {
  document.getElementById("example-select").value = String(state.example);
  document.getElementById("kind-select").value = state.kind;
  document.getElementById("layer-select").value = String(state.layer);
  for (const b of document.querySelectorAll(".head-toggle")) {
    b.setAttribute("aria-pressed", String(state.heads.has(+b.dataset.head)));
  }
}

// --- 1. head view: queries on the left, keys on the right, a line per weight -------------------------

function drawHeadView() {
  const record = chosenRecord();
  const weights = tensor(record.weights);
  const T = record.rows.length, S = record.cols.length;
  const svg = svgElement("svg", { width: 620, height: Math.max(T, S) * ROW + 24, role: "img" });
  const left = 200, right = 420;
  const lines = svgElement("g");
  svg.append(lines);
  for (const h of [...state.heads].sort((a, b) => a - b)) {
    for (let i = 0; i < T; i++) {
      const w = row(weights, h, i);
      for (let j = 0; j < S; j++) {
        if (w[j] < DRAW_MIN) continue;
        lines.append(svgElement("line", {
          x1: left + 6, y1: 16 + i * ROW, x2: right - 6, y2: 16 + j * ROW, stroke: COLOURS[h % 16],
          "stroke-width": 2, "stroke-opacity": Math.min(1, w[j]).toFixed(4), "data-h": h, "data-q": i,
          "data-k": j, "data-w": w[j].toFixed(4),
        }));
      }
    }
  }
  const isolate = (side, index) => {
    for (const l of lines.children) {
      l.style.display = index === null || +l.dataset[side] === index ? "" : "none";
    }
  };
  record.rows.forEach((token, i) => {
    const t = svgElement("text", { x: left, y: 20 + i * ROW, "text-anchor": "end", "data-side": "q", "data-index": i });
    t.textContent = token;
    if (i === state.query) t.classList.add("query-chosen");
    t.onmouseenter = () => isolate("q", i);
    t.onmouseleave = () => isolate("q", null);
    t.onclick = () => { state.query = i; render(); };
    svg.append(t);
  });
  record.cols.forEach((token, j) => {
    const t = svgElement("text", { x: right, y: 20 + j * ROW, "data-side": "k", "data-index": j });
    t.textContent = token;
    t.onmouseenter = () => isolate("k", j);
    t.onmouseleave = () => isolate("k", null);
    svg.append(t);
  });
  document.getElementById("head-view-title").textContent =
    `1. Head view: ${chosenName()}, heads ${[...state.heads].sort((a, b) => a - b).join(", ")}`;
  document.getElementById("head-view").replaceChildren(svg);
}

// --- 2. model view: every layer x head of the chosen kind, click one to open it ------------------------

function drawModelView() {
  const grid = element("div", { class: "grid", style: `grid-template-columns: repeat(${DATA.heads}, auto)` });
  for (let l = 0; l < DATA.layers; l++) {
    const m = DATA.modules.find((m) => m.kind === state.kind && m.layer === l);
    if (!m) continue;
    const weights = tensor(DATA.examples[state.example].modules[m.name].weights);
    for (let h = 0; h < DATA.heads; h++) {
      const chosen = l === state.layer && state.heads.has(h);
      const figure = element("figure", { class: chosen ? "chosen" : "", "data-layer": l, "data-head": h });
      const canvas = element("canvas");
      const w = matrix(weights, h);
      heatmap(canvas, w, Math.max(1, Math.floor(72 / Math.max(w.length, w[0] ? w[0].length : 1))));
      figure.append(canvas, element("figcaption", {}, `L${l} H${h}`));
      figure.onclick = () => {
        state.layer = l; state.heads = new Set([h]); state.stepHead = h; render();
      };
      grid.append(figure);
    }
  }
  document.getElementById("model-view").replaceChildren(grid);
}

function render() {
  if (!DATA.modules.some((m) => m.kind === state.kind && m.layer === state.layer)) {
    state.layer = Math.max(...DATA.modules.filter((m) => m.kind === state.kind).map((m) => m.layer));
  }
  if (!state.heads.has(state.stepHead)) state.stepHead = Math.min(...state.heads);
  state.query = Math.min(state.query, chosenRecord().rows.length - 1);
  syncControls();
  drawHeadView();
  drawModelView();
  drawSteps();
  drawHeadInfo();
  drawEvolution();
}

// for the console and the browser tests: what is drawn, in the cache's numbers
window.explorer = {
  data: DATA, state, render, tensor, matrix,
  weightsOf: (name, example, head) => matrix(tensor(DATA.examples[example].modules[name].weights), head),
  chosenName,
};
