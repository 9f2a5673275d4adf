// Refreshes the overview's counts in place: polls /api/status with its ETag (an unchanged spool
// answers 304), every 5 s while the tab is visible, paused while it is hidden. No inline script:
// this file is the only script the Content-Security-Policy allows.
"use strict";
(function () {
  const counts = document.getElementById("counts");
  if (!counts) { return; }
  const url = counts.dataset.refresh;
  let etag = null;
  let timer = null;
  let since = undefined;  // when the oldest ready job entered its folder (epoch seconds), null if none

  function showAge() {
    const oldest = document.getElementById("oldest-ready");
    if (!oldest || since === undefined) { return; }
    oldest.textContent = since === null ? "none" : `${Math.max(0, Date.now() / 1000 - since).toFixed(1)}s`;
  }

  function show(status) {
    for (const [name, count] of Object.entries(status.counts)) {
      const cell = document.querySelector(`[data-count="${CSS.escape(name)}"]`);
      if (cell) { cell.textContent = String(count); }
    }
    since = status.oldest_ready_since;
    showAge();
    const banner = document.getElementById("no-daemon");
    if (banner) { banner.hidden = status.daemons.length > 0; }
    showDaemons(status.daemons);
  }

  // The daemons table, rebuilt from the status with text nodes only (never HTML from the server).
  function showDaemons(daemons) {
    const body = document.querySelector("#daemons tbody");
    if (!body) { return; }
    const rows = daemons.map((d) => {
      const row = document.createElement("tr");
      const cells = [d.id, d.host, d.pid, `${d.busy} / ${d.workers}`, d.started_at];
      for (const value of cells) {
        const cell = document.createElement("td");
        cell.textContent = value === null || value === undefined ? "" : String(value);
        row.appendChild(cell);
      }
      return row;
    });
    if (rows.length === 0) {
      const row = document.createElement("tr");
      const cell = document.createElement("td");
      cell.colSpan = 5;
      cell.textContent = "none alive";
      row.appendChild(cell);
      rows.push(row);
    }
    body.replaceChildren(...rows);
  }

  async function poll() {
    try {
      const response = await fetch(url, { headers: etag ? { "If-None-Match": etag } : {}, credentials: "same-origin" });
      if (response.status === 200) {
        etag = response.headers.get("ETag");
        show(await response.json());
      } else if (response.status === 304) {
        showAge();  // nothing changed but the clock
      }
    } catch (error) {
      // the dashboard restarted or the network blinked: try again at the next tick
    }
  }

  function start() { if (timer === null) { timer = setInterval(poll, 5000); } }
  function stop() { if (timer !== null) { clearInterval(timer); timer = null; } }
  document.addEventListener("visibilitychange", () => { if (document.hidden) { stop(); } else { poll(); start(); } });
  if (!document.hidden) { start(); }
})();
