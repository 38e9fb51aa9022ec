// Jobs and models (templates/search/jobs.html): model coverage and index jobs, refreshed while
// jobs run; the controls only for those who may use them.
import {$, api, data, paths} from "./api.js";

const canIndex = data("can-index"), canActivate = data("can-activate");
const cell = (row, text, className) => { const td = row.insertCell(); td.textContent = text; if (className) td.className = className; return td; };
const button = (label, action, secondary = true) => {
  const b = document.createElement("button"); b.type = "button"; b.textContent = label; if (secondary) b.className = "secondary";
  b.addEventListener("click", async () => { b.disabled = true; try { await action(); } catch (e) { alert(e.message); } finally { b.disabled = false; refresh(); } });
  return b;
};
const duration = (seconds) => seconds < 90 ? `${Math.round(seconds)} s` : seconds < 5400 ? `${Math.round(seconds / 60)} min` : `${(seconds / 3600).toFixed(1)} h`;

async function models() {
  const rows = await api(paths.models);
  const body = $("models"); body.textContent = "";
  (rows.results || rows).forEach((m) => {
    const tr = body.insertRow();
    const name = cell(tr, m.key); if (m.active) { const strong = document.createElement("strong"); strong.textContent = " (active)"; name.append(strong); }
    const small = document.createElement("div"); small.className = "hint"; small.textContent = m.description; name.append(small);
    if (m.metrics && m.metrics.test) {
      const t = m.metrics.test, b = m.metrics.base_test || {};
      const quality = document.createElement("div"); quality.className = "hint";
      quality.textContent = `Held-out test split of ${m.metrics.dataset}: precision@10 ${t["precision@10"]} (${m.base}: ${b["precision@10"]}), ` +
        `mAP@10 ${t["map@10"]} (${b["map@10"]}), classifier accuracy ${m.metrics.test_accuracy}`;
      name.append(quality);
    }
    cell(tr, m.dim);
    const total = m.embedded + m.missing;
    const cover = cell(tr, total ? `${m.embedded} of ${total} items (${Math.round(100 * m.embedded / total)}%)` : "no items");
    const bar = document.createElement("progress"); bar.max = Math.max(total, 1); bar.value = m.embedded; bar.setAttribute("aria-label", `Coverage of ${m.key}`); cover.append(bar);
    const actions = tr.insertCell();
    if (canIndex) actions.append(button("Build index", () => api(paths.jobs, {json: {collection: "all", model: m.key, mode: "missing"}})));
    if (canIndex && canActivate) {
      if (!m.active && m.missing) actions.append(" ", button("Build, then activate", () => api(paths.jobs, {json: {collection: "all", model: m.key, mode: "missing", activate: true}})));
      if (!m.active) actions.append(" ", button("Activate", async () => {
        try { await api(paths.modelActivate(m.key), {json: {}}); }
        catch (e) {
          if (e.status !== 409 || !confirm(`${e.message}\n\nActivate anyway? Searches will miss the items without vectors.`)) throw e;
          await api(paths.modelActivate(m.key), {json: {force: true}});
        }
      }, false));
    }
  });
}

async function jobs() {
  const rows = await api(paths.jobs);
  const list = rows.results || rows, body = $("jobs"); body.textContent = "";
  if (!list.length) { const tr = body.insertRow(); cell(tr, "No index job yet.", "hint").colSpan = 8; }
  const now = Date.now();
  list.forEach((job) => {
    const tr = body.insertRow(); tr.dataset.id = job.id;
    cell(tr, `#${job.id} · ${job.collection} · ${job.mode}`);
    cell(tr, job.model);
    const state = cell(tr, job.state, `state-${job.state}`);
    if (job.error) { const e = document.createElement("div"); e.className = "hint"; e.textContent = job.error; state.append(e); }
    const progress = cell(tr, `${job.done + job.failed} of ${job.total}${job.failed ? ` (${job.failed} failed)` : ""}`);
    const bar = document.createElement("progress"); bar.max = 100; bar.value = job.percent; bar.setAttribute("aria-label", `Progress of job ${job.id}`); progress.append(bar);
    const started = job.started_at ? Date.parse(job.started_at) : null;
    const end = job.finished_at ? Date.parse(job.finished_at) : now;
    const processed = job.done + job.failed, seconds = started ? (end - started) / 1000 : 0;
    const rate = seconds > 0 && processed ? processed / seconds : null;
    cell(tr, rate ? `${rate.toFixed(rate < 10 ? 1 : 0)} items/s` : "–");
    const running = ["queued", "running"].includes(job.state);
    cell(tr, running && rate ? duration((job.total - processed) / rate) : "–");
    cell(tr, started ? new Date(started).toLocaleString() : "–");
    const actions = tr.insertCell();
    if (canIndex && running) actions.append(button("Cancel", () => api(paths.jobCancel(job.id), {json: {}})));
    if (job.failed) {
      const details = document.createElement("details"); const summary = document.createElement("summary"); summary.textContent = "failures";
      details.append(summary); details.addEventListener("toggle", async () => {
        if (!details.open || details.dataset.loaded) return; details.dataset.loaded = "1";
        const full = await api(paths.job(job.id));
        const ul = document.createElement("ul"); (full.failures || []).forEach((f) => { const li = document.createElement("li"); li.textContent = `${f.type} ${f.id}: ${f.error}`; ul.append(li); });
        details.append(ul);
      }); actions.append(details);
    }
  });
  $("jobs-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  return list.some((job) => ["queued", "running"].includes(job.state));
}

let timer = null;
async function refresh() {
  clearTimeout(timer);
  try { await models(); const busy = await jobs(); timer = setTimeout(refresh, busy ? 2000 : 10000); }
  catch (e) { $("jobs-updated").textContent = e.message; timer = setTimeout(refresh, 10000); }
}
document.querySelectorAll("[data-cancel-import]").forEach((b) => b.addEventListener("click", async () => {
  b.disabled = true;
  try { await api(paths.importCancel(b.dataset.cancelImport), {json: {}}); location.reload(); }
  catch (e) { alert(e.message); b.disabled = false; }
}));
refresh();
