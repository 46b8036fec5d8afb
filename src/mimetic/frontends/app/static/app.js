// mimetic's desk: progress, the loss curve, the folder picker, dropped files, the writing desk.
// Plain JavaScript, served by the app itself: nothing is loaded from anywhere else.
"use strict";
const csrf = () => document.querySelector('meta[name="csrf"]').content;
const $ = (sel, root = document) => root.querySelector(sel);

function post(url, data) {
  const body = data instanceof FormData ? data : new URLSearchParams(data);
  return fetch(url, {method: "POST", body, headers: {"X-CSRF-Token": csrf()}});
}

// ---------------------------------------------------------------- a job's event stream
// Every long job shows a bar and the time left: the stage's own estimate when it sends one
// (training: from its steps; the job process adds one to the stages that send none), else the
// time budget's upper bound ("at most").
function followJob(el) {
  const voice = el.dataset.voice, job = el.dataset.job;
  const bar = $("#job-progress", el) || $("#job-progress"), status = $("#job-status", el) || $("#job-status");
  const etaBox = $("#job-eta", el) || $("#job-eta");
  const budget = parseFloat(el.dataset.budgetS || "0"), opened = Date.now();
  const points = {train: [], held: []};
  let gotEta = false;
  const history = $("#history", el);
  if (history) {
    for (const m of JSON.parse(history.textContent || "[]")) addPoint(points, m.step, m.values || {});
    drawCurve(points);
  }
  const setEta = (s, atMost) => {
    const text = fmtTime(s);
    if (etaBox) etaBox.textContent = text === "–" ? "time left: estimating…" : `${atMost ? "at most " : "about "}${text} left`;
    if ($("#eta")) $("#eta").textContent = text;
  };
  if (budget > 0) {
    const started = Date.parse(el.dataset.started || "") || opened;
    const tick = () => {
      if (gotEta) return;
      const left = budget - (Date.now() - started) / 1000;
      setEta(Math.max(0, left), true);
      if (bar && !bar.dataset.steps) { bar.max = budget; bar.value = Math.min(budget, budget - Math.max(0, left)); }
    };
    tick(); setInterval(tick, 1000);
  }
  const es = new EventSource(`/api/voices/${encodeURIComponent(voice)}/jobs/${encodeURIComponent(job)}/events`);
  es.addEventListener("stage", (msg) => {
    const e = JSON.parse(msg.data);
    if (e.event === "progress") {
      if (e.total) {
        bar.max = e.total; bar.value = e.done || 0;
        if (e.unit === "steps") bar.dataset.steps = "1";
      }
      if (status) status.textContent = e.message || `${e.done || 0} of ${e.total || "?"} ${e.unit || ""}`;
      const info = e.info || {};
      if (info.tokens_per_s && $("#tps")) $("#tps").textContent = Math.round(info.tokens_per_s);
      if (e.eta_s !== undefined && e.eta_s !== null) { gotEta = !info.at_most; setEta(e.eta_s, !!info.at_most); }
      if (e.done !== undefined && $("#step") && e.unit === "steps") $("#step").textContent = `${e.done} of ${e.total}`;
    } else if (e.event === "metric") {
      const v = e.values || {};
      addPoint(points, e.step, v);
      if (v.held_out_nll !== undefined && $("#nll")) $("#nll").textContent = v.held_out_nll.toFixed(3);
      if (v.tokens_per_s && $("#tps")) $("#tps").textContent = Math.round(v.tokens_per_s);
      if ($("#step") && e.step) $("#step").textContent = e.step;
      drawCurve(points);
    } else if ((e.event === "started" || e.event === "warning") && status) {
      status.textContent = e.message;
    }
  });
  es.addEventListener("end", () => { es.close(); location.reload(); });
}

function addPoint(points, step, v) {
  if (typeof v.train_loss === "number") points.train.push([step, v.train_loss]);
  if (typeof v.held_out_nll === "number") points.held.push([step, v.held_out_nll]);
}

function fmtTime(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

// The curve: both series as lines, every measured point as a dot (a short run of a step or two
// is still a readable picture: its points, their values, and the steps they were taken at).
function drawCurve(points) {
  const svg = $("#curve");
  if (!svg) return;
  const all = points.train.concat(points.held);
  if (!all.length) return;
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  const x0 = Math.min(...xs, 0), x1 = Math.max(...xs, x0 + 1);
  const y0lo = Math.min(...ys), y1hi = Math.max(...ys), span = Math.max(y1hi - y0lo, 0.05 * Math.abs(y1hi) || 0.1);
  const y0 = y0lo - span * 0.1, y1 = y1hi + span * 0.1;
  const W = 600, H = 220, pad = 34;
  const px = x => pad + (x - x0) / (x1 - x0) * (W - 2 * pad), py = y => H - pad - (y - y0) / (y1 - y0) * (H - 2 * pad);
  const line = (pts, color, w) => pts.length > 1 ? `<polyline fill="none" stroke="${color}" stroke-width="${w}" points="${pts.map(p => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" ")}"/>` : "";
  const few = all.length <= 40;
  const dots = (pts, color, r) => pts.map(p => `<circle cx="${px(p[0]).toFixed(1)}" cy="${py(p[1]).toFixed(1)}" r="${r}" fill="${color}"><title>step ${p[0]}: ${p[1].toFixed(3)}</title></circle>`).join("");
  const label = (pts, color) => pts.length && pts.length <= 3 ? pts.map(p => `<text x="${(px(p[0]) + 6).toFixed(1)}" y="${(py(p[1]) - 6).toFixed(1)}" font-size="11" fill="${color}">${p[1].toFixed(3)}</text>`).join("") : "";
  svg.innerHTML = `<text x="4" y="14" font-size="11">${y1.toFixed(2)}</text><text x="4" y="${H - 4}" font-size="11">${y0.toFixed(2)}</text>` +
    `<text x="${pad}" y="${H - 4}" font-size="11">step ${x0}</text><text x="${W - 70}" y="${H - 4}" font-size="11">step ${x1}</text>` +
    line(points.train, "#8aa8c8", 1.2) + line(points.held, "#c0392b", 2) +
    (few ? dots(points.train, "#8aa8c8", 2.5) : "") + dots(points.held, "#c0392b", 3.5) +
    label(points.train, "#5a7896") + label(points.held, "#c0392b");
  svg.dataset.points = String(all.length);
  svg.dataset.drawn = String(svg.querySelectorAll("circle").length);
}

// ---------------------------------------------------------------- the folder picker
// Each folder by its own name, with a drawn icon (CSS, not a font glyph); its full path in the
// tooltip and in the line above the list.
function pickerLink(text, cls, onclick, title) {
  const a = document.createElement("a");
  const icon = document.createElement("span");
  icon.className = `icon ${cls}`;
  icon.setAttribute("aria-hidden", "true");
  a.appendChild(icon);
  a.appendChild(document.createTextNode(text));
  if (title) a.title = title;
  a.onclick = onclick;
  return a;
}

async function browse(path) {
  const box = $("#folders");
  const r = await fetch(`/api/folders?path=${encodeURIComponent(path || "")}`);
  const d = await r.json();
  box.hidden = false;
  if (d.error) { box.textContent = `${d.error} ${d.hint || ""}`; return; }
  box.innerHTML = "";
  if (d.path) {
    const here = document.createElement("p");
    here.className = "small here";
    here.textContent = d.path;
    box.appendChild(here);
    box.appendChild(pickerLink(`Use “${d.name}”`, "use", () => { $("#folder").value = d.path; box.hidden = true; }, d.path));
  }
  if (d.parent) box.appendChild(pickerLink("Up", "up", () => browse(d.parent), d.parent));
  d.folders.forEach((f, i) => box.appendChild(pickerLink((d.names || [])[i] || f, "folder", () => browse(f), f)));
}

// ---------------------------------------------------------------- dropped files
async function upload(voice, files) {
  const status = $("#drop-status");
  const data = new FormData();
  for (const f of files) data.append("files", f);
  data.append("csrf", csrf());
  status.textContent = `Copying ${files.length} file(s)…`;
  const r = await post(`/voices/${encodeURIComponent(voice)}/upload`, data);
  const d = await r.json();
  status.textContent = r.ok ? `Copied: ${d.saved.join(", ")}. Press “Read my writing again”.` : `${d.error} ${d.hint || ""}`;
}

// ---------------------------------------------------------------- the writing desk
function desk(form) {
  const voice = form.dataset.voice;
  let ids = {};
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("#outputs").hidden = false;
    $("#out-base").textContent = ""; $("#out-voice").textContent = ""; $("#mark-status").textContent = "";
    document.querySelectorAll(".marks button").forEach(b => { b.disabled = true; b.classList.remove("done"); });
    $("#write-button").disabled = true;
    const wbar = $("#write-progress"), wstatus = $("#write-status"), weta = $("#write-eta");
    $("#write-progress-box").hidden = false;
    wbar.max = 1; wbar.value = 0; wstatus.textContent = "starting…"; weta.textContent = "time left: estimating…";
    const asked = Date.now(), got = {base: 0, voice: 0};
    let total = 0, firstAt = 0;
    const r = await post(`/api/voices/${encodeURIComponent(voice)}/write`, new FormData(form));
    if (!r.ok) { const d = await r.json().catch(() => ({error: "The request was refused."})); $("#mark-status").textContent = `${d.error} ${d.hint || ""}`; $("#write-button").disabled = false; return; }
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
        const kind = (chunk.match(/^event: (.*)$/m) || [])[1], data = JSON.parse((chunk.match(/^data: (.*)$/m) || [])[1] || "{}");
        if (kind === "started") { total = data.total; wbar.max = total; wstatus.textContent = data.loading ? "loading the voice…" : "the base model writes first…"; }
        else if (kind === "text") {
          $(data.model === "base" ? "#out-base" : "#out-voice").textContent += data.text;
          got[data.model] = data.written;
          const done = (data.model === "voice" ? data.total : 0) + (data.model === "voice" ? got.voice : got.base);
          if (!firstAt) firstAt = Date.now();
          wbar.value = Math.min(total, done);
          wstatus.textContent = data.model === "base" ? `base model: ${got.base} of ${data.total} tokens` : `your voice: ${got.voice} of ${data.total} tokens`;
          const rate = done / Math.max(0.001, (Date.now() - firstAt) / 1000);
          if (done >= 3) weta.textContent = `at most ${fmtTime((total - done) / rate)} left`;
        }
        else if (kind === "done") { wbar.value = wbar.max; wstatus.textContent = `written in ${((Date.now() - asked) / 1000).toFixed(1)} s`; weta.textContent = "done"; ids = data; document.querySelectorAll(".marks button").forEach(b => b.disabled = false); $("#outputs").dataset.done = "1"; }
        else if (kind === "error") $("#mark-status").textContent = `${data.error} ${data.hint || ""}`;
      }
    }
    $("#write-button").disabled = false;
  });
  document.querySelectorAll(".marks button").forEach(b => b.addEventListener("click", async () => {
    const model = b.parentElement.dataset.model, label = b.dataset.label;
    const data = {id: ids[model], label};
    if (label === "best") data.over = String(ids.base);
    const r = await post(`/api/voices/${encodeURIComponent(voice)}/mark`, data);
    const d = await r.json();
    $("#mark-status").textContent = r.ok ? `Marked: ${label} (text ${ids[model]}).` : `${d.error} ${d.hint || ""}`;
    if (r.ok) b.classList.add("done");
  }));
}

// ---------------------------------------------------------------- the plan
async function plan(box) {
  box.textContent = "Measuring this machine…";
  const r = await fetch(`/api/voices/${encodeURIComponent(box.dataset.voice)}/plan`);
  const d = await r.json();
  box.innerHTML = "";
  if (d.error) { box.textContent = `${d.error} ${d.hint || ""}`; return; }
  const ul = document.createElement("ul");
  for (const line of d.lines) { const li = document.createElement("li"); li.textContent = line; ul.appendChild(li); }
  box.appendChild(ul);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-job]").forEach(followJob);
  const b = $("#browse"); if (b) b.addEventListener("click", () => browse($("#folder").value));
  const drop = $("#drop");
  if (drop) {
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); upload(drop.dataset.voice, e.dataTransfer.files); });
    $("#files").addEventListener("change", (e) => upload(drop.dataset.voice, e.target.files));
  }
  const d = $("#desk"); if (d) desk(d);
  const p = $("#plan-button"); if (p) p.addEventListener("click", () => plan($("#plan-lines")));
});
