// Attendome head explorer: plain JavaScript, no library, no network. Data: window.ATTENDOME (data.js)
// and window.ATTENDOME_ATTN[model] (attn/<model>.js, loaded on demand with a <script> tag, which
// browsers allow from file:// where fetching files is refused).
"use strict";
(function () {
  const D = window.ATTENDOME;
  window.ATTENDOME_ATTN = window.ATTENDOME_ATTN || {};
  const $ = (s) => document.querySelector(s);
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  };
  const SVG = "http://www.w3.org/2000/svg";
  const OKABE = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"];
  const GREY = "#BBBBBB";
  const realTypes = [...new Set(D.heads.map((h) => h.type))].filter((t) => t !== "untyped" && t !== "control").sort();
  const colour = (t) => (realTypes.includes(t) ? OKABE[realTypes.indexOf(t) % OKABE.length] : GREY);
  const models = D.models.map((m) => m.key);
  const headId = (h) => `${h.model}/${h.layer}/${h.head}`;
  const byId = new Map(D.heads.map((h, i) => [headId(h), i]));
  const name = (h) => `${h.model} L${h.layer}.H${h.head}`;
  const positive = (lab) => D.positive_labels.includes(lab);
  const fmt = (v, n = 3) => (v === null || v === undefined ? "-" : Number(v).toFixed(n));
  let selected = null;

  // ---- tabs
  document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
  function showTab(t) {
    document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === t));
    document.querySelectorAll(".tab").forEach((s) => s.classList.toggle("hidden", s.id !== `tab-${t}`));
  }
  $("#summary").textContent = `${D.heads.length} heads of ${D.models.length} models`;

  // ---- map
  const method = $("#method"), fModel = $("#f-model"), fType = $("#f-type"), fLabel = $("#f-label"), search = $("#search");
  D.methods.forEach((m) => method.append(el("option", { value: m, text: m })));
  models.forEach((m) => fModel.append(el("option", { value: m, text: m })));
  D.types.forEach((t) => fType.append(el("option", { value: t, text: t })));
  const W = 640, H = 520, PAD = 24;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  $("#map").append(svg);
  function shape(mi, x, y, r) {
    const k = mi % 5;
    if (k === 0) { const c = document.createElementNS(SVG, "circle"); c.setAttribute("cx", x); c.setAttribute("cy", y); c.setAttribute("r", r); return c; }
    const p = document.createElementNS(SVG, "polygon");
    const pts = k === 1 ? [[-1, -1], [1, -1], [1, 1], [-1, 1]] : k === 2 ? [[0, -1.3], [1.2, 1], [-1.2, 1]]
      : k === 3 ? [[0, -1.4], [1.4, 0], [0, 1.4], [-1.4, 0]] : [[0, 1.3], [1.2, -1], [-1.2, -1]];
    p.setAttribute("points", pts.map(([a, b]) => `${x + a * r},${y + b * r}`).join(" "));
    return p;
  }
  const points = [];
  function drawMap() {
    svg.replaceChildren();
    points.length = 0;
    const xy = D.map[method.value];
    const xs = xy.map((p) => p[0]), ys = xy.map((p) => p[1]);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const sx = (x) => PAD + ((x - x0) / (x1 - x0 || 1)) * (W - 2 * PAD);
    const sy = (y) => H - PAD - ((y - y0) / (y1 - y0 || 1)) * (H - 2 * PAD);
    const order = D.heads.map((h, i) => i).sort((a, b) => (D.heads[a].type === "untyped") - (D.heads[b].type === "untyped")).reverse();
    for (const i of order) {
      const h = D.heads[i];
      const typed = h.type !== "untyped" && h.type !== "control";
      const s = shape(models.indexOf(h.model), sx(xy[i][0]), sy(xy[i][1]), typed ? 4.5 : 3.2);
      const c = colour(h.type);
      s.setAttribute("fill", h.control ? "none" : c);
      s.setAttribute("stroke", Object.values(h.outlier).some((o) => o[2]) ? "#D55E00" : c);
      if (Object.values(h.outlier).some((o) => o[2])) s.setAttribute("stroke-width", "2.5");
      s.setAttribute("class", "head");
      s.dataset.id = headId(h);
      s.dataset.index = i;
      const t = document.createElementNS(SVG, "title");
      t.textContent = `${name(h)} (${h.type})`;
      s.append(t);
      s.addEventListener("click", () => { location.hash = "head=" + headId(h); });
      svg.append(s);
      points[i] = s;
    }
    $("#method-note").textContent = D.method_notes[method.value] || "";
    filter();
  }
  function matches(i) {
    const h = D.heads[i];
    if (fModel.value && h.model !== fModel.value) return false;
    if (fType.value) {
      const sc = h.scores[fType.value];
      const pos = sc && positive(sc[2]);
      if (fLabel.value === "positive" && !pos) return false;
      if (fLabel.value === "untyped" && pos) return false;
      if (!fLabel.value && !sc) return false;
    } else if (fLabel.value) {
      const any = Object.values(h.scores).some((s) => positive(s[2]));
      if (fLabel.value === "positive" && !any) return false;
      if (fLabel.value === "untyped" && any) return false;
    }
    return true;
  }
  function parseSearch(q) {
    const m = q.trim().match(/^(\S+)?\s*L?(\d+)[.\s/:]H?(\d+)$/i);
    if (!m) return null;
    return { model: m[1], layer: +m[2], head: +m[3] };
  }
  function filter() {
    const q = parseSearch(search.value);
    let n = 0;
    points.forEach((p, i) => {
      const h = D.heads[i];
      const ok = matches(i);
      n += ok;
      p.classList.toggle("dim", !ok);
      const hit = q && h.layer === q.layer && h.head === q.head && (!q.model || h.model.startsWith(q.model));
      p.classList.toggle("hit", !!hit);
      p.classList.toggle("sel", selected === i);
    });
    $("#count").textContent = `showing ${n} of ${D.heads.length} heads`;
  }
  [method].forEach((c) => c.addEventListener("change", drawMap));
  [fModel, fType, fLabel].forEach((c) => c.addEventListener("change", filter));
  search.addEventListener("input", filter);
  search.addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    const q = parseSearch(search.value);
    if (!q) return;
    const i = D.heads.findIndex((h) => h.layer === q.layer && h.head === q.head && (!q.model || h.model.startsWith(q.model)));
    if (i >= 0) location.hash = "head=" + headId(D.heads[i]);
  });
  const legend = $("#legend");
  [...realTypes, "untyped"].forEach((t) => legend.append(el("span", {}, el("i", { style: `background:${colour(t)}` }), t)));
  models.forEach((m, mi) => legend.append(el("span", { text: `${["●", "■", "▲", "◆", "▼"][mi % 5]} ${m}` })));

  // ---- head card
  function loadAttn(model) {
    return new Promise((resolve) => {
      if (window.ATTENDOME_ATTN[model]) return resolve(window.ATTENDOME_ATTN[model]);
      const s = el("script", { src: `attn/${encodeURIComponent(model)}.js` });
      s.onload = () => resolve(window.ATTENDOME_ATTN[model]);
      s.onerror = () => resolve(null);
      document.head.append(s);
    });
  }
  function decode(b64) {
    const bin = atob(b64), out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function heatmap(values, offset, S, words, title) {
    const cell = 8, left = 64, top = 58;
    const c = el("canvas", { width: left + (S + 1) * cell + 4, height: top + S * cell + 4 });
    const g = c.getContext("2d");
    g.font = "8px sans-serif";
    for (let i = 0; i < S; i++) {
      for (let j = 0; j <= S; j++) {
        const v = values[offset + i * (S + 1) + j] / 255;
        const shade = Math.round(255 * (1 - Math.sqrt(v)));
        g.fillStyle = `rgb(${shade},${shade},${Math.round(255 - 0.55 * (255 - shade))})`;
        g.fillRect(left + j * cell, top + i * cell, cell - 0.5, cell - 0.5);
      }
      g.fillStyle = "#333"; g.textAlign = "right";
      g.fillText(String(words[i]).slice(0, 11), left - 3, top + i * cell + 7);
    }
    ["⟨sink⟩", ...words].forEach((w, j) => {
      g.save(); g.translate(left + j * cell + 6, top - 3); g.rotate(-Math.PI / 2.6); g.textAlign = "left";
      g.fillText(String(w).slice(0, 11), 0, 0); g.restore();
    });
    return el("div", { class: "heat" }, el("div", { text: title }), c);
  }
  function scoreTable(h) {
    const t = el("table", {}, el("tr", {}, ...["type", "score", "± stderr", "label", "method"].map((x) => el("th", { text: x }))));
    for (const typ of D.types) {
      const s = h.scores[typ];
      if (!s) continue;
      t.append(el("tr", {}, el("td", { text: typ }), el("td", { text: fmt(s[0]) }), el("td", { text: fmt(s[1]) }),
        el("td", { text: s[2] || "-", class: positive(s[2]) ? "pos" : "" }), el("td", { text: s[3] || "" })));
    }
    return t;
  }
  function nearestTable(h) {
    const t = el("table", { class: "nearest" }, el("tr", {}, ...["method", "nearest head", "similarity", "mutual", "its types"].map((x) => el("th", { text: x }))));
    for (const m of Object.keys(h.nearest)) {
      for (const [j, sim, mutual] of h.nearest[m]) {
        const o = D.heads[j];
        const types = Object.entries(o.scores).filter(([, s]) => positive(s[2])).map(([k]) => k).join(", ");
        t.append(el("tr", {}, el("td", { text: m }), el("td", {}, el("a", { href: "#head=" + headId(o), text: name(o) })),
          el("td", { text: fmt(sim) }), el("td", { text: mutual ? "yes" : "no" }), el("td", { text: types || "-" })));
      }
    }
    return t;
  }
  async function showCard(i) {
    selected = i;
    filter();
    const h = D.heads[i];
    const card = $("#card");
    card.replaceChildren();
    card.dataset.head = headId(h);
    card.append(el("h2", { text: name(h) }));
    const kinds = Object.entries(h.scores).filter(([, s]) => positive(s[2])).map(([k]) => k);
    card.append(el("p", { text: `family ${h.family} · layer ${h.layer} · head ${h.head} · KV group ${h.kv}` +
      (h.control ? " · random-init control" : "") + ` · types: ${kinds.join(", ") || "none"}` }));
    card.append(el("h3", { text: "atlas scores" }), scoreTable(h));
    const o = el("p", {});
    for (const [p, [ratio, score, flagged]] of Object.entries(h.outlier)) {
      o.append(el("div", { text: `${p}: held-out KL / positional ${fmt(ratio)}, outlier score ${fmt(score, 2)}` +
        (flagged ? " (non-embeddable)" : ""), class: flagged ? "flag" : "" }));
    }
    card.append(el("h3", { text: "outlier score (within-model robust z of log KL ratio)" }), o);
    card.append(el("h3", { text: "nearest head in each other model" }));
    card.append(Object.keys(h.nearest).length ? nearestTable(h) : el("p", { class: "note", text: "none (controls are not matched)" }));
    const box = el("div", { id: "attention" }, el("p", { class: "note", text: "loading attention…" }));
    card.append(el("h3", { text: "attention on held-out prompts: true, cloner, universal" }), box);
    const A = await loadAttn(h.model);
    if (selected !== i) return;
    box.replaceChildren();
    if (!A) { box.append(el("p", { class: "note", text: "no attention file for this model" })); return; }
    const row = h.layer * D.models.find((m) => m.key === h.model).n_heads + h.head;
    for (const p of A.prompts) {
      box.append(el("p", { class: "note", text: `${p.id} (${p.kind}; rows: queries, columns: sink + keys; first ${p.S} segments)` }));
      for (const src of ["true", "cloner", "universal"]) {
        const v = p["_" + src] || (p["_" + src] = decode(p[src]));
        box.append(heatmap(v, row * p.S * (p.S + 1), p.S, p.words, src));
      }
    }
  }
  function route() {
    const m = location.hash.match(/head=([^&]+)/);
    if (!m) return;
    const i = byId.get(decodeURIComponent(m[1]));
    if (i !== undefined) showCard(i);
  }
  window.addEventListener("hashchange", route);

  // ---- atlas grids
  const atlasType = $("#atlas-type");
  D.types.forEach((t) => atlasType.append(el("option", { value: t, text: t })));
  if (D.types.includes("induction")) atlasType.value = "induction";
  function drawAtlas() {
    const box = $("#atlas");
    box.replaceChildren();
    const typ = atlasType.value;
    for (const m of D.models) {
      const idx = D.heads.map((h, i) => i).filter((i) => D.heads[i].model === m.key);
      const vals = idx.map((i) => (D.heads[i].scores[typ] || [null])[0]).filter((v) => v !== null);
      const vmax = Math.max(1e-9, ...vals);
      const cell = Math.max(6, Math.min(14, Math.floor(220 / m.n_heads)));
      const c = el("canvas", { width: m.n_heads * cell + 2, height: m.n_layers * cell + 2 });
      const g = c.getContext("2d");
      for (const i of idx) {
        const h = D.heads[i], s = h.scores[typ];
        const v = s && s[0] !== null ? s[0] / vmax : 0;
        const shade = Math.round(255 * (1 - v));
        g.fillStyle = `rgb(${shade},${Math.round(shade * 0.9 + 20)},${Math.min(255, shade + 40)})`;
        g.fillRect(1 + h.head * cell, 1 + h.layer * cell, cell - 1, cell - 1);
        if (s && positive(s[2])) { g.fillStyle = "#D55E00"; g.beginPath(); g.arc(1 + h.head * cell + cell / 2, 1 + h.layer * cell + cell / 2, cell / 5, 0, 7); g.fill(); }
      }
      c.addEventListener("click", (e) => {
        const r = c.getBoundingClientRect();
        const hd = Math.floor((e.clientX - r.left - 1) / cell), ly = Math.floor((e.clientY - r.top - 1) / cell);
        const i = byId.get(`${m.key}/${ly}/${hd}`);
        if (i !== undefined) location.hash = "head=" + headId(D.heads[i]);
      });
      box.append(el("div", { class: "atlas-model" }, el("div", { text: `${m.key}${m.control ? " (control)" : ""}: layers ↓, heads →, max ${fmt(vmax)}` }), c));
    }
  }
  atlasType.addEventListener("change", drawAtlas);

  // ---- leaderboard (sortable tables)
  function sortable(tbl) {
    const t = el("table", {});
    const head = el("tr", {});
    const body = [];
    let dir = 1, col = -1;
    tbl.columns.forEach((c, k) => {
      const th = el("th", { class: "sortable", text: c, title: "click to sort" });
      th.addEventListener("click", () => { dir = col === k ? -dir : -1; col = k; render(); });
      head.append(th);
    });
    function render() {
      const rows = [...tbl.rows];
      if (col >= 0) rows.sort((a, b) => {
        const x = a[col].v, y = b[col].v;
        if (x === null) return 1; if (y === null) return -1;
        return (x < y ? -1 : x > y ? 1 : 0) * dir;
      });
      t.replaceChildren(head, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", { text: c.t })))));
    }
    render();
    return t;
  }
  for (const tbl of D.leaderboard) {
    $("#leaderboard").append(el("h3", { text: tbl.title }), el("p", { class: "note", text: tbl.note }), sortable(tbl));
  }

  // ---- figures
  for (const f of D.figures || []) {
    if (!f.endsWith(".png")) continue;
    $("#figures").append(el("p", {}, el("a", { href: "figures/" + f.replace(/\.png$/, ".svg"), text: f.replace(/\.png$/, "") + " (SVG)" })),
      el("img", { src: "figures/" + f, alt: f }));
  }

  drawMap();
  drawAtlas();
  route();
})();
