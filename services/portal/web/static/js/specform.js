// The workset form (New workset, YAML generator): add and remove sample rows in place. Without it the
// same buttons post the form and the server adds or removes the row. Rows are renumbered after each
// change so row i of the table is samples[i] of the spec, where the server's findings point.
"use strict";
(() => {
  const form = document.getElementById("spec-form");
  const body = document.getElementById("sample-rows");
  const template = document.getElementById("sample-row-template");
  if (!form || !body || !template) return;
  const revalidate = () => form.dispatchEvent(new Event("change", { bubbles: true }));
  const renumber = () => {
    [...body.querySelectorAll("tr[data-row]")].forEach((tr, i) => {
      tr.dataset.row = String(i);
      tr.querySelectorAll("[id],[name],[for],[data-upload-for],[aria-label],[value]").forEach((el) => {
        for (const attr of ["id", "name", "for", "data-upload-for"]) {
          const v = el.getAttribute(attr);
          if (v) el.setAttribute(attr, v.replace(/samples-(\d+|__i__)-/, `samples-${i}-`));
        }
        const label = el.getAttribute("aria-label");
        if (label) el.setAttribute("aria-label", label.replace(/row (\d+|__i__)/, `row ${i}`));
        if (el.matches("button[data-remove-row]")) el.value = `remove_row:${i}`;
      });
    });
  };
  document.getElementById("add-row")?.addEventListener("click", (e) => {
    e.preventDefault();
    body.appendChild(template.content.firstElementChild.cloneNode(true));
    renumber();
    window.htmx?.process(body.lastElementChild);
    body.lastElementChild.querySelector("input")?.focus();
  });
  body.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-remove-row]");
    if (!button) return;
    e.preventDefault();
    if (body.querySelectorAll("tr[data-row]").length > 1) {
      button.closest("tr").remove();
      renumber();
      revalidate();
    }
  });
})();
