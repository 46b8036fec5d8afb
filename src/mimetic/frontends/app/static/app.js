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
function followJob(el) {
  const voice = el.dataset.voice, job = el.dataset.job;
  const bar = $("#job-progress", el) || $("#job-progress"), status = $("#job-status", el) || $("#job-status");
  const points = {train: [], held: []};
  const es = new EventSource(`/api/voices/${encodeURIComponent(voice)}/jobs/${encodeURIComponent(job)}/events`);
  es.addEventListener("stage", (msg) => {
    const e = JSON.parse(msg.data);
    if (e.event === "progress") {
      if (e.total) { bar.max = e.total; bar.value = e.done || 0; }
      if (status) status.textContent = e.message || `${e.done || 0} of ${e.total || "?"} ${e.unit || ""}`;
      const info = e.info || {};
      if (info.tokens_per_s && $("#tps")) $("#tps").textContent = Math.round(info.tokens_per_s);
      if (e.eta_s !== undefined && e.eta_s !== null && $("#eta")) $("#eta").textContent = fmtTime(e.eta_s);
      if (e.done !== undefined && $("#step") && e.unit === "steps") $("#step").textContent = `${e.done} of ${e.total}`;
    } else if (e.event === "metric") {
      const v = e.values || {};
      if (v.train_loss !== undefined) points.train.push([e.step, v.train_loss]);
      if (v.held_out_nll !== undefined) { points.held.push([e.step, v.held_out_nll]); if ($("#nll")) $("#nll").textContent = v.held_out_nll.toFixed(3); }
      if (v.tokens_per_s && $("#tps")) $("#tps").textContent = Math.round(v.tokens_per_s);
      if ($("#step")) $("#step").textContent = e.step;
      drawCurve(points);
    } else if (e.event === "started" && status) {
      status.textContent = e.message;
    } else if (e.event === "warning" && status) {
      status.textContent = e.message;
    }
  });
  es.addEventListener("end", () => { es.close(); location.reload(); });
}

function fmtTime(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function drawCurve(points) {
  const svg = $("#curve");
  if (!svg) return;
  const all = points.train.concat(points.held);
  if (!all.length) return;
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-6);
  const W = 600, H = 220, pad = 30;
  const px = x => pad + (x - x0) / (x1 - x0) * (W - 2 * pad), py = y => H - pad - (y - y0) / (y1 - y0) * (H - 2 * pad);
  const line = (pts, color, w) => pts.length ? `<polyline fill="none" stroke="${color}" stroke-width="${w}" points="${pts.map(p => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" ")}"/>` : "";
  const dots = points.held.map(p => `<circle cx="${px(p[0]).toFixed(1)}" cy="${py(p[1]).toFixed(1)}" r="3" fill="#c0392b"/>`).join("");
  svg.innerHTML = `<text x="4" y="14" font-size="11">${y1.toFixed(2)}</text><text x="4" y="${H - 4}" font-size="11">${y0.toFixed(2)}</text>` +
    `<text x="${W - 60}" y="${H - 4}" font-size="11">step ${x1}</text>` + line(points.train, "#8aa8c8", 1.2) + line(points.held, "#c0392b", 2) + dots;
  svg.dataset.points = String(all.length);
}

// ---------------------------------------------------------------- the folder picker
async function browse(path) {
  const box = $("#folders");
  const r = await fetch(`/api/folders?path=${encodeURIComponent(path || "")}`);
  const d = await r.json();
  box.hidden = false;
  if (d.error) { box.textContent = `${d.error} ${d.hint || ""}`; return; }
  box.innerHTML = "";
  if (d.path) {
    const use = document.createElement("a");
    use.textContent = `✓ Use ${d.path}`;
    use.onclick = () => { $("#folder").value = d.path; box.hidden = true; };
    box.appendChild(use);
  }
  if (d.parent) { const up = document.createElement("a"); up.textContent = "↑ up"; up.onclick = () => browse(d.parent); box.appendChild(up); }
  for (const f of d.folders) { const a = document.createElement("a"); a.textContent = "📁 " + f; a.onclick = () => browse(f); box.appendChild(a); }
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
        if (kind === "text") $(data.model === "base" ? "#out-base" : "#out-voice").textContent += data.text;
        else if (kind === "done") { ids = data; document.querySelectorAll(".marks button").forEach(b => b.disabled = false); $("#outputs").dataset.done = "1"; }
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
