// The gallery (templates/search/gallery.html): pages of thumbnails, uploads, selection and
// deletion, feature generation with live progress, preview, search by image.
import {$, api, csrf, data, paths, problem, similarityBar, toast} from "./api.js";

const staff = data("can-edit"), pageSize = data("page-size");

// ---- grid: one page at a time (a 50,000-image library is 834 light pages, not one heavy one)
let page = 1, items = [], selected = new Set(), lastChecked = null, total = 0;
async function load() {
  const data = await api(`${paths.gallery}?page=${page}&page_size=${pageSize}`).catch((e) => { toast(e.message, true); return null; });
  if (!data) return;
  total = data.count; items = data.results;
  const pages = Math.max(1, Math.ceil(total / pageSize));
  if (page > pages) { page = pages; return load(); }
  const grid = $("thumbs"); grid.textContent = "";
  items.forEach((item, index) => {
    const card = document.createElement("div"); card.className = "thumb" + (selected.has(item.id) ? " selected" : ""); card.dataset.id = item.id;
    card.title = item.filename;
    const open = document.createElement("button"); open.type = "button"; open.className = "open";
    open.setAttribute("aria-label", `Preview ${item.filename}`);
    const img = document.createElement("img"); img.src = item.thumbnail_url; img.alt = ""; img.loading = "lazy"; img.decoding = "async"; img.width = 200; img.height = 200;
    open.append(img); open.addEventListener("click", () => preview(index)); card.append(open);
    if (staff) {
      const box = document.createElement("input"); box.type = "checkbox"; box.className = "check"; box.checked = selected.has(item.id);
      box.setAttribute("aria-label", `Select ${item.filename}`);
      box.addEventListener("click", (event) => choose(index, box.checked, event.shiftKey)); card.append(box);
    }
    if (!item.embedded) { const badge = document.createElement("span"); badge.className = "badge"; badge.textContent = "not embedded"; card.append(badge); }
    const name = document.createElement("div"); name.className = "name"; name.textContent = item.filename; card.append(name);
    grid.append(card);
  });
  $("empty").hidden = total > 0;
  $("page-label").textContent = `Page ${page} of ${pages} · ${total} image${total === 1 ? "" : "s"}`;
  $("prev").disabled = page <= 1; $("next").disabled = page >= pages;
  refreshSelection(); coverage();
}
$("prev").addEventListener("click", () => { page -= 1; load(); });
$("next").addEventListener("click", () => { page += 1; load(); });
$("jump").addEventListener("submit", (event) => {
  event.preventDefault();
  const wanted = Math.floor(Number($("page-jump").value));
  if (wanted >= 1) { page = Math.min(wanted, Math.max(1, Math.ceil(total / pageSize))); load(); }
});

async function coverage() {
  const rows = await api(paths.indexStatus).catch(() => []);
  const row = (rows.results || rows).find((r) => r.collection === "gallery");
  if (row) $("coverage").textContent = row.missing
    ? `${row.embedded} of ${row.items} images embedded with ${row.model} — search results may be incomplete until the rest are.`
    : `All ${row.items} images embedded with ${row.model}.`;
}

// ---- selection (shift-click selects the range since the last box clicked)
function choose(index, checked, range) {
  const from = range && lastChecked !== null ? Math.min(lastChecked, index) : index;
  const to = range && lastChecked !== null ? Math.max(lastChecked, index) : index;
  for (let i = from; i <= to; i++) checked ? selected.add(items[i].id) : selected.delete(items[i].id);
  lastChecked = index; refreshSelection();
}
function refreshSelection() {
  document.querySelectorAll(".thumb").forEach((card) => {
    const on = selected.has(Number(card.dataset.id)); card.classList.toggle("selected", on);
    const box = card.querySelector(".check"); if (box) box.checked = on;
  });
  const button = $("delete-selected");
  if (button) { button.disabled = selected.size === 0; button.textContent = selected.size ? `Delete selected (${selected.size})` : "Delete selected"; }
}
if (staff) {
  $("select-page").addEventListener("click", () => { items.forEach((i) => selected.add(i.id)); refreshSelection(); });
  $("delete-selected").addEventListener("click", async () => {
    if (!confirm(`Delete ${selected.size} image(s)? This cannot be undone.`)) return;
    try {
      const r = await api(paths.galleryDelete, {json: {ids: [...selected]}}); toast(`${r.deleted} image(s) deleted.`);
      document.querySelectorAll("#results .result").forEach((card) => { if (selected.has(Number(card.dataset.id))) card.remove(); });
      if ($("search-state").textContent) {
        const left = document.querySelectorAll("#results .result").length;
        $("search-state").textContent = `${left} result(s) left after the deletion.`;
      }
      selected.clear(); load();
    }
    catch (e) { toast(e.message, true); }
  });
  $("delete-all").addEventListener("click", async () => {
    if (!confirm(`Delete all ${total} images of the gallery? This cannot be undone.`)) return;
    try {
      const r = await api(paths.galleryDelete, {json: {all: true}}); toast(`${r.deleted} image(s) deleted.`);
      $("results").textContent = ""; $("search-state").textContent = ""; selected.clear(); page = 1; load();
    }
    catch (e) { toast(e.message, true); }
  });
}

// ---- preview (Esc closes, arrows move)
let current = 0;
function preview(index) {
  current = index; const item = items[index];
  $("preview-image").src = item.image_url; $("preview-image").alt = item.filename;
  $("preview-name").textContent = `${item.filename} · ${item.width}×${item.height}`;
  if (!$("preview").open) $("preview").showModal();
}
$("preview-close").addEventListener("click", () => $("preview").close());
$("preview-prev").addEventListener("click", () => preview((current - 1 + items.length) % items.length));
$("preview-next").addEventListener("click", () => preview((current + 1) % items.length));
document.addEventListener("keydown", (event) => {
  if (!$("preview").open) return;
  if (event.key === "Escape") { event.preventDefault(); $("preview").close(); }
  if (event.key === "ArrowRight") { event.preventDefault(); preview((current + 1) % items.length); }
  if (event.key === "ArrowLeft") { event.preventDefault(); preview((current - 1 + items.length) % items.length); }
});
$("preview-similar").addEventListener("click", () => { $("preview").close(); search({gallery_image: items[current].id}); });

// ---- uploads: batches of up to 8 files, each file's bar follows its batch
if (staff) {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); upload([...e.dataTransfer.files]); });
  $("files").addEventListener("change", () => { upload([...$("files").files]); $("files").value = ""; });
}
function send(batch, rows) {
  return new Promise((resolve) => {
    const form = new FormData(); batch.forEach((file) => form.append("files", file));
    const xhr = new XMLHttpRequest(); xhr.open("POST", paths.gallery);
    xhr.setRequestHeader("X-CSRFToken", csrf()); xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) rows.forEach((r) => r.bar.value = 100 * e.loaded / e.total); };
    xhr.onload = () => {
      let body = null; try { body = JSON.parse(xhr.responseText); } catch (_) {}
      if (xhr.status >= 400 && !(body && body.rejected)) {
        rows.forEach((r) => fail(r, problem(body, xhr.status))); return resolve(0);
      }
      const refused = new Map((body.rejected || []).map((r) => [r.filename, r.error]));
      rows.forEach((r) => refused.has(r.file.name) ? fail(r, refused.get(r.file.name)) : (r.bar.value = 100));
      resolve((body.created || []).length);
    };
    xhr.onerror = () => { rows.forEach((r) => fail(r, "The upload failed (network).")); resolve(0); };
    xhr.send(form);
  });
}
function fail(row, message) { row.bar.remove(); const p = document.createElement("span"); p.className = "bad"; p.textContent = message; row.li.append(p); }
async function upload(files) {
  if (!files.length) return;
  const list = $("uploads"); list.textContent = "";
  const rows = files.map((file) => {
    const li = document.createElement("li"); const name = document.createElement("span"); name.className = "name"; name.textContent = file.name;
    const bar = document.createElement("progress"); bar.max = 100; bar.value = 0; bar.setAttribute("aria-label", `Upload of ${file.name}`);
    li.append(name, bar); list.append(li); return {file, li, bar};
  });
  let created = 0;
  for (let i = 0; i < rows.length; i += 8) created += await send(files.slice(i, i + 8), rows.slice(i, i + 8));
  const refused = rows.length - created;
  toast(`${created} image(s) uploaded` + (refused ? `, ${refused} refused.` : "."), refused > 0);
  load();
}

// ---- feature generation with live progress (Server-Sent Events), resumed after a reload
function follow(jobId, announce = true) {
  $("job").hidden = false; localStorage.setItem("simsite.gallery.job", jobId);
  const stream = new EventSource(paths.jobEvents(jobId));
  stream.onmessage = (event) => {
    const job = JSON.parse(event.data);
    $("job-progress").value = job.percent;
    $("job-label").textContent = `Generating features: ${job.done + job.failed} of ${job.total} (${Math.round(job.percent)}%)`;
    if (["succeeded", "failed", "cancelled"].includes(job.state)) {
      stream.close();  // kept: after a reload the last run's outcome is shown again
      $("job-label").textContent = job.total === 0 && job.state === "succeeded"
        ? "Features: every image already had them (100%)"
        : `Features ${job.state}: ${job.done} embedded, ${job.failed} failed (${Math.round(job.percent)}%)`;
      if (announce) toast(`Feature generation ${job.state}.`, job.state !== "succeeded");
      load();
    }
  };
  stream.onerror = () => { if (stream.readyState === EventSource.CLOSED) $("job").hidden = true; };
}
if (staff) {
  $("generate").addEventListener("click", async () => {
    try { const job = await api(paths.jobs, {json: {collection: "gallery", mode: "missing"}}); follow(job.id); }
    catch (e) { toast(e.message, true); }
  });
  // After a reload: the last run again (its progress if it still runs, else its outcome).
  const last = localStorage.getItem("simsite.gallery.job");
  if (last) api(paths.job(last)).then(() => follow(last, false), () => localStorage.removeItem("simsite.gallery.job"));
}

// ---- search by image
$("threshold").addEventListener("input", () => $("threshold-value").textContent = `${$("threshold").value}%`);
$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!$("query").files[0]) { toast("Choose an image to search with.", true); return; }
  search({image: $("query").files[0]});
});
async function search(source) {
  const form = new FormData();
  Object.entries(source).forEach(([k, v]) => form.append(k, v));
  form.append("collection", "gallery"); form.append("k", $("k").value);
  form.append("threshold", String(Number($("threshold").value) / 100));
  $("search-state").textContent = "Searching…"; $("results").textContent = "";
  try {
    const r = await api(paths.search, {method: "POST", body: form});
    $("search-state").textContent = r.results.length ? `${r.results.length} result(s) in ${r.took_ms} ms (${r.model}).` : "No image is that similar.";
    r.results.forEach((hit) => {
      const card = document.createElement("div"); card.className = "card result"; card.dataset.id = hit.id;
      const img = new Image(); img.src = hit.thumbnail_url; img.alt = hit.filename || ""; img.loading = "lazy";
      const body = document.createElement("div"); body.className = "body";
      const name = document.createElement("div"); name.textContent = hit.filename || `#${hit.id}`;
      const score = document.createElement("div"); score.className = "muted similarity"; score.textContent = `${(hit.similarity * 100).toFixed(1)}% similar`;
      body.append(name, score, similarityBar(hit.similarity)); card.append(img, body); $("results").append(card);
    });
    $("search-title").scrollIntoView({behavior: "smooth"});
  } catch (e) { $("search-state").textContent = ""; toast(e.message, true); }
}

load();
