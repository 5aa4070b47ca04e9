// stamen's page behaviour (no inline script anywhere: the Content-Security-Policy forbids it).
// Every feature here has a plain-HTML fallback: the theme form posts, bulk actions are a normal form.
"use strict";
(() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";
  window.stamenCsrf = csrf;

  // htmx requests carry the CSRF token in a header (forms carry it as a field).
  document.body.addEventListener("htmx:configRequest", (e) => { e.detail.headers["X-CSRF-Token"] = csrf(); });
  // A failed fragment request says so instead of failing silently.
  document.body.addEventListener("htmx:responseError", (e) => {
    const box = document.getElementById("live-notice");
    if (box) {
      box.className = "problem";
      box.textContent = e.detail.xhr.responseText?.slice(0, 300) || `Request failed (${e.detail.xhr.status}).`;
    }
  });

  // Theme: switch in place and remember the choice in the same cookie the server reads.
  const toggle = document.getElementById("theme-toggle");
  const effective = () => {
    const set = document.documentElement.dataset.theme;
    if (set === "light" || set === "dark") return set;
    return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  };
  const label = () => { if (toggle) toggle.textContent = effective() === "dark" ? "Light theme" : "Dark theme"; };
  label();
  toggle?.closest("form")?.addEventListener("submit", (e) => {
    e.preventDefault();
    const next = effective() === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    document.cookie = `stamen_theme=${next}; path=/; max-age=31536000; samesite=lax`;
    label();
    document.dispatchEvent(new CustomEvent("stamen:theme", { detail: next }));
  });

  // A table wider than the screen scrolls sideways inside .table-wrap; data-more says on which side there is
  // more to see, and CSS fades that edge so a cut-off column reads as "scroll for more", not as the end.
  const edges = (wrap) => {
    const more = [];
    if (wrap.scrollLeft > 1) more.push("left");
    if (wrap.scrollLeft + wrap.clientWidth < wrap.scrollWidth - 1) more.push("right");
    const now = more.join(" ");
    if (wrap.dataset.more !== now) wrap.dataset.more = now;
  };
  const resized = new ResizeObserver((entries) => entries.forEach((e) => edges(e.target)));
  const watch = (root) => root.querySelectorAll(".table-wrap:not([data-more])").forEach((wrap) => {
    edges(wrap);
    wrap.addEventListener("scroll", () => edges(wrap), { passive: true });
    resized.observe(wrap);
    if (wrap.firstElementChild) resized.observe(wrap.firstElementChild);
  });
  watch(document);
  // Live updates swap parts of the page: new tables, or rows that change a table's width.
  document.body.addEventListener("htmx:afterSettle", () => {
    watch(document);
    document.querySelectorAll(".table-wrap").forEach(edges);
  });

  // Bulk selection on the worksets list.
  const all = document.querySelector("[data-select-all]");
  const boxes = () => [...document.querySelectorAll('input[type="checkbox"][name="ids"]')];
  const count = () => {
    const out = document.getElementById("selected-count");
    const n = boxes().filter((b) => b.checked).length;
    if (out) out.textContent = n ? `${n} selected` : "";
  };
  all?.addEventListener("change", () => { boxes().forEach((b) => { b.checked = all.checked; }); count(); });
  document.addEventListener("change", (e) => { if (e.target.matches?.('input[name="ids"]')) count(); });
})();
