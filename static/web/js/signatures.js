// Signatures (templates/signatures/signatures.html): compare two, signers' references, verify,
// activate an encoder.
import {$, api, paths} from "./api.js";

const say = (element, text, error = false) => { element.textContent = text; element.className = "status" + (error ? " error" : ""); };

// Drop zones: a dropped file goes into the zone's input; a local preview is shown at once.
document.querySelectorAll("[data-drop]").forEach((zone) => {
  const input = zone.querySelector("input"), img = zone.querySelector("img");
  const show = () => { if (input.files[0]) { img.src = URL.createObjectURL(input.files[0]); img.hidden = false; } };
  input.addEventListener("change", show);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault(); zone.classList.remove("over");
    if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; show(); }
  });
});

$("compare-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData();
  form.append("image1", $("image1").files[0]); form.append("image2", $("image2").files[0]);
  if ($("compare-threshold").value) form.append("threshold", $("compare-threshold").value);
  say($("compare-status"), "Comparing…"); $("compare-result").hidden = true;
  try {
    const r = await api(paths.signatureCompare, {method: "POST", body: form});
    $("compare-verdict").textContent = r.result;
    $("compare-verdict").className = "verdict " + (r.result === "Matched" ? "ok" : "no");
    $("compare-similarity").textContent = r.similarity.toFixed(4);
    $("compare-cut").textContent = r.threshold; $("compare-model").textContent = r.model;
    $("preview1").src = r.previews.image1; $("preview2").src = r.previews.image2;
    $("compare-result").hidden = false; say($("compare-status"), "");
  } catch (error) { say($("compare-status"), error.message, true); }
});

const signer = $("signer");
async function loadReferences() {
  if (!signer) return;
  const id = signer.value; $("verify-result").hidden = true;
  $("signer-panel").hidden = !id; if (!id) return;
  const box = $("references"); box.textContent = "Loading…";
  try {
    const page = await api(`${paths.references(id)}?page_size=100`);
    const rows = page.results || page; box.textContent = rows.length ? "" : "No references yet.";
    const option = signer.selectedOptions[0], count = page.count ?? rows.length;
    option.textContent = option.textContent.replace(/ — \d+ references?$/, ` — ${count} reference${count === 1 ? "" : "s"}`);
    rows.forEach((ref) => {
      const figure = document.createElement("figure"), img = new Image(), caption = document.createElement("figcaption");
      img.src = ref.image_url; img.alt = `Reference ${ref.id} (${ref.filename})`; img.loading = "lazy";
      caption.className = "hint" + (ref.outlier ? " error" : "");
      caption.textContent = `#${ref.id}` + (ref.consistency === null ? "" : ` · consistency ${ref.consistency.toFixed(3)}`) + (ref.outlier ? " · unlike the others" : "");
      if (ref.outlier) figure.classList.add("outlier");
      figure.append(img, caption); box.append(figure);
    });
    const outliers = rows.filter((ref) => ref.outlier).length, measured = rows.filter((ref) => ref.consistency !== null);
    $("consistency").textContent = measured.length < 2 ? "" :
      `Consistency (mean similarity of each reference to the others): ${Math.min(...measured.map((r) => r.consistency)).toFixed(3)}–${Math.max(...measured.map((r) => r.consistency)).toFixed(3)}.` +
      (outliers ? ` ${outliers} reference${outliers === 1 ? " matches" : "s match"} none of the others: check ${outliers === 1 ? "it" : "them"} and delete ${outliers === 1 ? "it" : "them"} if wrong.` : "");
  } catch (error) { box.textContent = ""; say($("signer-status"), error.message, true); }
}
if (signer) signer.addEventListener("change", loadReferences);

const signerForm = $("signer-form");
if (signerForm) signerForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const made = await api(paths.signers, {json: {name: $("signer-name").value, external_id: $("signer-external").value}});
    signer.add(new Option(`${made.name}${made.external_id ? ` (${made.external_id})` : ""} — 0 references`, made.id, true, true));
    signerForm.reset(); say($("signer-status"), `Signer ${made.name} added.`); loadReferences();
  } catch (error) { say($("signer-status"), error.message, true); }
});

const enrolForm = $("enrol-form");
if (enrolForm) enrolForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(); [...$("enrol-files").files].forEach((file) => form.append("files", file));
  say($("signer-status"), "Enrolling…");
  try {
    const r = await api(paths.references(signer.value), {method: "POST", body: form});
    const refused = r.rejected.map((x) => `${x.filename}: ${x.error}`).join("; ");
    say($("signer-status"), `${r.created.length} reference(s) enrolled.` + (refused ? ` Refused: ${refused}` : ""), !!refused);
    enrolForm.reset(); loadReferences();
  } catch (error) { say($("signer-status"), error.message, true); }
});

const verifyForm = $("verify-form");
if (verifyForm) verifyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(); form.append("image", $("verify-file").files[0]);
  say($("signer-status"), "Verifying…"); $("verify-result").hidden = true;
  try {
    const r = await api(paths.verify(signer.value), {method: "POST", body: form});
    $("verify-decision").textContent = r.decision === "genuine" ? "Genuine" : "Forged";
    $("verify-decision").className = "verdict " + (r.decision === "genuine" ? "ok" : "no");
    $("verify-score").textContent = r.score.toFixed(4); $("verify-cut").textContent = r.threshold;
    $("verify-count").textContent = r.references_used; $("verify-model").textContent = r.model;
    if (r.preview) $("verify-preview").src = r.preview;
    const closest = r.closest_reference || {};
    $("verify-closest").hidden = !closest.preview; if (closest.preview) $("verify-closest").src = closest.preview;
    $("verify-closest-caption").textContent = closest.id ? `Closest reference #${closest.id} (similarity ${closest.similarity.toFixed(4)})` : "";
    $("verify-overlay").hidden = !r.overlay; if (r.overlay) $("verify-overlay").src = r.overlay;
    const point = r.operating_point || {};
    const how = r.mode === "writer_dependent" ? "the signer's own model" : "the best similarity to a reference";
    const at = point.name === "target_far" ? `the operating point SIGNATURE_TARGET_FAR = ${point.target_far}` :
      point.name === "requested" ? "the threshold you gave" : "the equal-error point";
    const expected = point.expected_far === undefined ? "" :
      ` On validation writers with ${point.calibrated_with_references} references it accepted ${(100 * point.expected_far).toFixed(1)}% of skilled forgeries and refused ${(100 * point.expected_frr).toFixed(1)}% of genuine signatures.`;
    $("verify-basis").textContent = `Decided by ${how} at ${at}.` + (r.confidence === null ? "" : ` Calibrated confidence that it is genuine: ${(100 * r.confidence).toFixed(1)}%.`) + expected;
    const rows = $("verify-rows"); rows.textContent = "";
    r.per_reference.forEach((item) => { const tr = rows.insertRow(); tr.insertCell().textContent = `#${item.reference}`; tr.insertCell().textContent = item.similarity.toFixed(4); });
    $("verify-result").hidden = false; say($("signer-status"), "");
  } catch (error) { say($("signer-status"), error.message, true); }
});

document.querySelectorAll("[data-activate]").forEach((button) => button.addEventListener("click", async () => {
  try { await api(paths.encoderActivate(button.dataset.activate), {method: "POST"}); location.reload(); }
  catch (error) { alert(error.message); }
}));
