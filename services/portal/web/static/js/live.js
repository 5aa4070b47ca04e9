// Live updates: one EventSource on /live (Server-Sent Events fed by the bus). Each workset event is
// re-dispatched on <body> as `stamen:any` and `stamen:ws-<id>`; page regions listen with htmx
// (hx-trigger="stamen:ws-<id> from:body") and fetch their fresh HTML. The browser resends Last-Event-ID
// when it reconnects by itself; when the stream closed for good (a server restart), a new EventSource
// resumes with ?last_event_id=, so no event is missed either way.
"use strict";
(() => {
  const url = document.body.dataset.live;
  if (!url || !("EventSource" in window)) return;
  const dot = document.getElementById("live-dot");
  const text = document.getElementById("live-status");
  // Pages that show live data say from which stream position they were made (data-live-from).
  let last = document.body.dataset.liveFrom || null;
  let source = null;
  let delay = 1000;
  const show = (state, words) => {
    if (dot) dot.dataset.state = state;
    if (text) text.textContent = words;
    document.body.dataset.liveState = state;
  };
  const open = () => {
    source = new EventSource(last ? `${url}?last_event_id=${encodeURIComponent(last)}` : url);
    source.addEventListener("open", () => { delay = 1000; show("live", "live updates on"); });
    source.addEventListener("hello", (e) => { if (e.lastEventId) last = e.lastEventId; });
    source.addEventListener("workset", (e) => {
      if (e.lastEventId) last = e.lastEventId;
      let fact;
      try { fact = JSON.parse(e.data); } catch { return; }
      document.body.dispatchEvent(new CustomEvent("stamen:any", { detail: fact }));
      document.body.dispatchEvent(new CustomEvent(`stamen:ws-${fact.workset_id}`, { detail: fact }));
    });
    source.addEventListener("reload", () => {
      source.close();
      show("reconnecting", "missed too many updates: reload the page");
    });
    source.addEventListener("error", () => {
      show("reconnecting", "reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 30000);
      }
    });
  };
  open();
  window.addEventListener("pagehide", () => source?.close());
})();
