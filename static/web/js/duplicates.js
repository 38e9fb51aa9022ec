// Duplicates (templates/search/duplicates.html): the threshold's live value; with groups to review,
// selection, bulk confirmation and the keyboard shortcuts.
const slider = document.getElementById("threshold");
slider.addEventListener("input", () => { document.getElementById("threshold-out").value = Number(slider.value).toFixed(1); });

/** The review form's selection, confirmations and shortcuts. */
function review(form) {
  const groups = [...form.querySelectorAll(".group")];
  const boxes = [...form.querySelectorAll(".select-group")];
  const all = document.getElementById("select-all");
  function refresh() {
    const count = boxes.filter((b) => b.checked).length;
    groups.forEach((g) => g.classList.toggle("selected", !!g.querySelector(".select-group:checked")));
    const label = document.getElementById("selected-count");
    if (label) label.textContent = `${count} selected`;
    for (const id of ["bulk-keep", "bulk-dismiss"]) { const b = document.getElementById(id); if (b) b.disabled = count === 0; }
    if (all) all.checked = count > 0 && count === boxes.length;
  }
  boxes.forEach((b) => b.addEventListener("change", refresh));
  if (all) all.addEventListener("change", () => { boxes.forEach((b) => { b.checked = all.checked; }); refresh(); });
  form.addEventListener("submit", (event) => {
    const button = event.submitter;
    if (!button) return;
    if (button.name === "action") {  // a bulk action: the selected groups, not one
      const count = boxes.filter((b) => b.checked).length;
      const what = button.value === "keep" ? `Keep one copy in each of ${count} groups and delete the others?` : `Mark ${count} groups as not duplicates?`;
      if (!confirm(what)) event.preventDefault();
    }
  });
  let current = -1;
  function focusGroup(index) {
    if (!groups.length) return;
    current = Math.max(0, Math.min(groups.length - 1, index));
    groups[current].focus();
    groups[current].scrollIntoView({block: "nearest"});
  }
  form.addEventListener("focusin", (event) => { const g = event.target.closest(".group"); if (g) current = groups.indexOf(g); });
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.matches("input[type=text], input[type=number], input[type=range], select, textarea")) return;
    const group = groups[current];
    if (event.key === "?") { document.getElementById("help").showModal(); return; }
    if (event.key === "j" || event.key === "ArrowDown" && event.target === group) { event.preventDefault(); focusGroup(current + 1); return; }
    if (event.key === "k" || event.key === "ArrowUp" && event.target === group) { event.preventDefault(); focusGroup(current - 1); return; }
    if (!group) return;
    if (/^[1-9]$/.test(event.key)) {
      const radio = group.querySelectorAll("input[type=radio]")[Number(event.key) - 1];
      if (radio) { radio.checked = true; }
    } else if (event.key === "x") {
      const box = group.querySelector(".select-group");
      if (box) { box.checked = !box.checked; refresh(); }
    } else if (event.key === "d" || event.key === "n") {
      const button = group.querySelector(`button[data-action=${event.key === "d" ? "keep" : "dismiss"}]`);
      if (button) button.click();
    }
  });
  refresh();
}

const form = document.getElementById("review");
if (form) review(form);
