"use strict";
// explorer.html, second part: 3. the seven steps of one head for one query token, as --debug prints
// them; 4. the training evolution; 5. the head's analysis. Reads what explorer.js decoded.

const SHOWN_DIMS = 6; // vector entries printed per vector (the rest as "...")

function vectorText(v) {
  if (!v) return "(left out: the page's size budget)";
  const shown = v.slice(0, SHOWN_DIMS).map((x) => fixed(x, 3)).join(", ");
  const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  return `[${shown}${v.length > SHOWN_DIMS ? ", ..." : ""}]  |·| = ${fixed(norm, 3)}`;
}

function vectorOf(p, h, i) {
  const t = tensor(p);
  if (!t) return null;
  return t.shape.length === 3 ? row(t, h, i) : Array.from(t.values.subarray(i * t.shape[1], (i + 1) * t.shape[1]));
}

// step 5 on the page: softmax over the keys the mask allows, from the cache's scores
function softmax(scores, allowed) {
  const kept = scores.map((s, j) => (allowed[j] ? s : -Infinity));
  const top = Math.max(...kept);
  const e = kept.map((s) => (Number.isFinite(s) ? Math.exp(s - top) : 0));
  const total = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / total);
}

function drawSteps() {
  const record = chosenRecord(), h = state.stepHead, i = state.query;
  const head = document.getElementById("step-head-select");
  fillSelect(head, [...state.heads].sort((a, b) => a - b).map((x) => [x, `head ${x}`]), h);
  head.onchange = () => { state.stepHead = +head.value; render(); };
  const query = document.getElementById("query-select");
  fillSelect(query, record.rows.map((t, k) => [k, `${k}: ${t}`]), i);
  query.onchange = () => { state.query = +query.value; render(); };
  const out = document.getElementById("steps");
  if (!record.scores) {
    out.replaceChildren(element("p", { class: "note" }, "This attention's scores were not recorded."));
    return;
  }
  const S = record.cols.length, rootD = Math.sqrt(DATA.d_k);
  const scores = row(tensor(record.scores), h, i);
  const allowed = record.allowed ? [...record.allowed[i]].map((c) => c === "1") : scores.map(() => true);
  const page = softmax(scores, allowed);
  const cached = row(tensor(record.weights), h, i);
  const v = record.v ? Array.from({ length: S }, (_, j) => vectorOf(record.v, h, j)) : null;
  const parts = [
    element("p", { class: "vector" }, `1-2. q_${i} ("${record.rows[i]}"), head ${h}, d_k = ${DATA.d_k}: ` +
      vectorText(vectorOf(record.q, h, i))),
  ];
  const table = element("table", { id: "step-table" });
  const header = element("tr");
  for (const title of ["j", "key", "k_j", "q·k_j", "3. ÷√d_k", "4. mask", "5. softmax", "cache weight", "6. w_j v_j"]) {
    header.append(element("th", {}, title));
  }
  table.append(header);
  let sum = 0;
  const z = new Array(DATA.d_k).fill(0);
  for (let j = 0; j < S; j++) {
    sum += page[j];
    const tr = element("tr", { class: allowed[j] ? "" : "blocked", "data-k": j });
    const wv = v && v[j] ? v[j].map((x) => x * cached[j]) : null;
    if (wv) wv.forEach((x, d) => { z[d] += x; });
    const bar = element("span", { class: "bar", style: `width:${Math.round(60 * page[j])}px` });
    const cells = [
      [j], [record.cols[j], "token"], [record.k ? vectorText(vectorOf(record.k, h, j)).split("  ")[0] : "-"],
      [fixed(scores[j] * rootD, 3)], [fixed(scores[j], 3)], [allowed[j] ? fixed(scores[j], 3) : "-inf"],
      [fixed(page[j], 4), "softmax"], [fixed(cached[j], 4), "cache-weight"],
      [wv ? vectorText(wv).split("  ")[0] : "-"],
    ];
    for (const [text, cls] of cells) {
      const td = element("td", cls ? { class: cls } : {}, String(text));
      if (cls === "softmax") { td.dataset.value = String(page[j]); td.append(bar); }
      if (cls === "cache-weight") td.dataset.value = String(cached[j]);
      tr.append(td);
    }
    table.append(tr);
  }
  const total = element("tr");
  total.append(element("td", { colspan: 6 }, "sum over the keys"),
    element("td", { id: "softmax-sum", "data-value": String(sum) }, fixed(sum, 6)));
  table.append(total);
  parts.push(table);
  const cachedZ = vectorOf(record.z, h, i);
  if (v && cachedZ) {
    const gap = Math.max(...z.map((x, d) => Math.abs(x - cachedZ[d])));
    parts.push(element("p", { class: "vector" }, `6. z_${i} = Σ_j w_j v_j, on the page: ${vectorText(z)}`),
      element("p", { class: "vector" }, `   z_${i} in the cache: ${vectorText(cachedZ)}  (largest difference ${fixed(gap, 4)}: float16 vectors)`));
  }
  parts.push(element("p", { class: "vector" }, `7. concatenate the ${DATA.heads} heads' z_${i}, times W^O: ` +
    vectorText(vectorOf(record.out, 0, i))));
  out.replaceChildren(...parts);
}

// --- 5. the head's analysis: pattern class and entropy ------------------------------------------------

function drawHeadInfo() {
  const name = chosenName(), record = chosenRecord();
  const lines = [...state.heads].sort((a, b) => a - b).map((h) => {
    const entropy = record.entropy[h];
    let text = `head ${h}: ${record.pattern[h] || "?"}, normalised entropy ${entropy == null ? "-" : fixed(entropy, 3)} (this example)`;
    const report = DATA.report && DATA.report[name] && DATA.report[name][h];
    if (report) text += `; the run's analysis (held-out batch): ${report.pattern}, ${fixed(report.normalized_entropy, 3)}`;
    return element("li", { "data-head": h }, text);
  });
  document.getElementById("head-info").replaceChildren(...lines);
}

// a heatmap with the query tokens down the left and the key tokens along the top
function labelledHeatmap(canvas, weights, rows, cols, cell) {
  const margin = 70, T = weights.length, S = T ? weights[0].length : 0;
  canvas.width = margin + S * cell;
  canvas.height = margin + T * cell;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < T; i++) {
    for (let j = 0; j < S; j++) {
      const [r, g, b] = blue(weights[i][j]);
      ctx.fillStyle = `rgb(${r},${g},${b})`;
      ctx.fillRect(margin + j * cell, margin + i * cell, cell, cell);
    }
  }
  ctx.fillStyle = "#1d2330";
  ctx.font = `${Math.min(12, cell)}px monospace`;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  rows.forEach((t, i) => ctx.fillText(t.slice(0, 9), margin - 4, margin + (i + 0.5) * cell));
  cols.forEach((t, j) => {
    ctx.save();
    ctx.translate(margin + (j + 0.5) * cell, margin - 4);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "left";
    ctx.fillText(t.slice(0, 9), 0, 0);
    ctx.restore();
  });
}

// --- 4. training evolution: a slider over the --track_internals snapshots -----------------------------

function drawEvolution() {
  const box = document.getElementById("evolution-body");
  const evo = DATA.evolution;
  if (!evo) {
    box.replaceChildren(element("p", { class: "note" },
      "No training snapshots: train with --track_internals (or --version analysis) to see this head change."));
    return;
  }
  const name = evo.maps[chosenName()] ? chosenName() : evo.module;
  const maps = tensor(evo.maps[name]);
  const [N, H, T, S] = maps.shape;
  const h = Math.min(state.stepHead, H - 1);
  let slider = document.getElementById("evolution-slider");
  if (!slider || +slider.max !== N - 1) {
    slider = element("input", { type: "range", id: "evolution-slider", min: 0, max: N - 1, value: N - 1 });
  }
  const label = element("span", { id: "evolution-step" });
  const canvas = element("canvas", { id: "evolution-canvas" });
  const caption = element("p", { class: "note" },
    `${name}, head ${h}, on the probe example (queries down, keys across), as the run recorded it.`);
  const show = () => {
    const k = +slider.value;
    const start = ((k * H + h) * T) * S;
    const weights = Array.from({ length: T }, (_, i) => Array.from(maps.values.subarray(start + i * S, start + (i + 1) * S)));
    labelledHeatmap(canvas, weights, evo.rows[name], evo.cols[name], Math.max(6, Math.min(24, Math.floor(420 / Math.max(T, S)))));
    canvas.dataset.step = String(evo.steps[k]);
    label.textContent = `step ${evo.steps[k]} (${k + 1} of ${N})`;
    state.snapshot = k;
  };
  slider.oninput = show;
  box.replaceChildren(slider, label, canvas, caption);
  show();
}

buildControls();
render();
