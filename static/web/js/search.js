// Search by image (templates/search/search.html): a file, a URL or an item; results, preview, CSV export.
import {$, csrf, data as pageData, paths, problem, similarityBar} from "./api.js";

const coverage = pageData("coverage-data");
const params = new URLSearchParams(location.search);
let item = null, lastQuery = null, shown = [];

function coverageFor(collection) {
  const rows = coverage.rows.filter((r) => collection === "all" || r.collection === collection);
  return rows.reduce((sum, r) => ({items: sum.items + r.items, embedded: sum.embedded + r.embedded}), {items: 0, embedded: 0});
}
function showCoverage() {
  const c = coverageFor($("collection").value), box = $("coverage");
  box.hidden = c.embedded >= c.items;
  box.textContent = c.items === 0 ? "Nothing to search yet: add products or gallery images first." :
    `${c.embedded} of ${c.items} images embedded with ${coverage.model} — results may be incomplete until the rest are.`;
}
function setQuery(kind, value, label) {
  item = kind ? {[kind]: value} : null;
  $("from-item").hidden = !kind; $("from-item").textContent = kind ? `Similar to ${label}` : "";
  if (kind) { $("file").value = ""; $("image_url").value = ""; }
}
function showPreview(src) { const img = $("query-preview"); img.hidden = !src; if (src) img.src = src; }

$("threshold").addEventListener("input", () => $("threshold-value").textContent = `${$("threshold").value}%`);
$("collection").addEventListener("change", () => { $("product-filters").disabled = $("collection").value === "gallery"; showCoverage(); });
$("file").addEventListener("change", () => { const f = $("file").files[0]; if (f) { setQuery(null); $("image_url").value = ""; showPreview(URL.createObjectURL(f)); } });
$("image_url").addEventListener("change", () => { const u = $("image_url").value.trim(); if (u) { setQuery(null); $("file").value = ""; showPreview(u); } });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) { $("file").files = e.dataTransfer.files; $("file").dispatchEvent(new Event("change")); }
});

function body() {
  const data = new FormData();
  if (item) Object.entries(item).forEach(([k, v]) => data.append(k, v));
  else if ($("file").files[0]) data.append("image", $("file").files[0]);
  else if ($("image_url").value.trim()) data.append("image_url", $("image_url").value.trim());
  else return null;
  data.append("collection", $("collection").value);
  data.append("k", $("k").value || "12");
  data.append("threshold", String(Number($("threshold").value) / 100));
  if ($("collection").value !== "gallery") {
    [...$("category").selectedOptions].forEach((o) => data.append("category", o.value));
    for (const name of ["min_price", "max_price"]) if ($(name).value) data.append(name, $(name).value);
  }
  return data;
}
async function post(data, format) {
  const response = await fetch(`${paths.search}${format ? "?format=" + format : ""}`, {method: "POST", body: data,
    credentials: "same-origin", headers: {"X-CSRFToken": csrf(), "Accept": format ? "text/csv" : "application/json"}});
  if (!response.ok) {
    throw new Error(problem(await response.json().catch(() => null), response.status));
  }
  return response;
}
function card(hit) {
  const el = document.createElement("article"); el.className = "card result"; el.dataset.type = hit.type;
  const open = document.createElement("button"); open.type = "button"; open.className = "open";
  const title = hit.type === "product" ? hit.name : hit.filename;
  open.setAttribute("aria-label", `Preview ${title}`);
  const img = document.createElement("img"); img.loading = "lazy"; img.src = hit.thumbnail_url; img.alt = ""; open.append(img);
  open.addEventListener("click", () => preview(hit, title));
  const b = document.createElement("div"); b.className = "body";
  const name = document.createElement("div"); name.className = "title"; name.textContent = title; name.title = title;
  const meta = document.createElement("div"); meta.className = "muted";
  meta.textContent = hit.type === "product" ? `${hit.category} · ${hit.price}` : "gallery image";
  const score = document.createElement("div"); score.className = "muted similarity"; score.textContent = `${(hit.similarity * 100).toFixed(1)}% similar`;
  b.append(name, meta, score, similarityBar(hit.similarity)); el.append(open, b); return el;
}
let previewed = null;
function preview(hit, title) {
  previewed = hit; $("preview-img").src = hit.image_url; $("preview-img").alt = title;
  $("preview-caption").textContent = `${title} — ${(hit.similarity * 100).toFixed(1)}% similar`; $("preview").showModal();
}
$("preview-close").addEventListener("click", () => $("preview").close());
$("preview-similar").addEventListener("click", () => {
  $("preview").close();
  const kind = previewed.type === "product" ? "product" : "gallery_image";
  setQuery(kind, previewed.id, previewed.type === "product" ? previewed.name : previewed.filename);
  showPreview(previewed.thumbnail_url); run();
});

async function run() {
  const data = body();
  $("error").hidden = true;
  if (!data) { $("error").hidden = false; $("error").textContent = "Choose an image, paste an image URL, or start from a product or gallery image."; return; }
  $("go").disabled = true; $("state").textContent = "Searching…";
  try {
    const result = await (await post(data)).json();
    lastQuery = data; shown = result.results; $("export").disabled = !shown.length;
    $("results").replaceChildren(...shown.map(card));
    const c = coverageFor($("collection").value);
    const missing = c.items - c.embedded;
    $("state").textContent = shown.length
      ? `${shown.length} result(s) in ${result.took_ms} ms (${result.model})${missing ? ` — ${missing} item(s) not embedded yet were not searched` : ""}.`
      : missing ? `No match among the ${c.embedded} embedded items; ${missing} are not embedded yet and could not be searched.`
                : "No item is that similar: lower the minimum similarity or widen the filters.";
  } catch (e) {
    $("error").hidden = false; $("error").textContent = e.message; $("state").textContent = "";
  } finally { $("go").disabled = false; }
}
$("form").addEventListener("submit", (e) => { e.preventDefault(); run(); });
$("export").addEventListener("click", async () => {
  try {
    const blob = await (await post(lastQuery, "csv")).blob();
    const a = document.createElement("a"); a.href = URL.createObjectURL(blob); a.download = "search-results.csv"; a.click();
  } catch (e) { $("error").hidden = false; $("error").textContent = e.message; }
});
$("clear").addEventListener("click", () => {
  $("form").reset(); setQuery(null); showPreview(null); $("threshold-value").textContent = "0%";
  $("results").replaceChildren(); $("export").disabled = true; $("error").hidden = true; lastQuery = null;
  $("state").textContent = "Choose an image, paste a URL, or use \"Find similar\" on a product or gallery image.";
  $("product-filters").disabled = false; showCoverage();
});

showCoverage();
for (const kind of ["product", "gallery_image"]) {
  if (params.get(kind)) { setQuery(kind, params.get(kind), `${kind.replace("_", " ")} ${params.get(kind)}`); run(); }
}
