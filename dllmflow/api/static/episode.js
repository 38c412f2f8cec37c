// Live view of one episode over Server-Sent Events: a log of turns and tool calls, and the
// current turn's text as it is refined (diffusion: pass by pass, with the characters that
// changed in the latest pass highlighted; AR: tokens appended). After every turn and tool call
// the counters, waterfall and timeline are re-rendered by the server (GET .../body) and
// swapped in, and the status badge follows the events: the page never needs a reload.
"use strict";

(function () {
  const live = document.getElementById("live");
  if (!live) return;
  const state = document.getElementById("live-state");
  const log = document.getElementById("live-log");
  const panel = document.getElementById("refinement");
  const textBox = document.getElementById("refine-text");
  const passBox = document.getElementById("refine-pass");
  const whereBox = document.getElementById("refine-where");
  const committed = document.getElementById("refine-committed");
  const fraction = document.getElementById("refine-fraction");
  const MAX_LOG = 200;
  let previous = "";
  let passes = 0;
  let turnKey = null;

  function addLog(text, cls) {
    const item = document.createElement("li");
    item.textContent = text;
    if (cls) item.className = cls;
    log.appendChild(item);
    while (log.children.length > MAX_LOG) log.removeChild(log.firstChild);
    log.scrollTop = log.scrollHeight;
  }

  // Render `text`, marking characters that differ from the previous pass (no innerHTML).
  function renderPass(text) {
    textBox.replaceChildren();
    let run = "", runNew = false;
    const flush = () => {
      if (!run) return;
      const node = runNew ? document.createElement("mark") : document.createTextNode(run);
      if (runNew) node.textContent = run;
      textBox.appendChild(node);
      run = "";
    };
    for (let i = 0; i < text.length; i++) {
      const changed = text[i] !== previous[i];
      if (changed !== runNew) { flush(); runNew = changed; }
      run += text[i];
    }
    flush();
    previous = text;
  }

  // model_progress phases: "refinement" (diffusion: the whole partial turn, masked positions
  // shown as a glyph), "tokens" (AR: a text delta), "turn_text" (oracle: the whole turn).
  function onProgress(data) {
    const key = `${data.step}/${data.role}/${data.repair ? "repair" : ""}`;
    if (key !== turnKey) { turnKey = key; previous = ""; passes = 0; }
    panel.hidden = false;
    passes = data.refinement_passes || data.forward_passes || passes + 1;
    passBox.textContent = passes;
    const extra = [data.backend, data.action_ready ? "action ready" : "", data.repair ? "repair" : ""];
    whereBox.textContent = [`step ${data.step ?? "?"}`, data.role, ...extra].filter(Boolean).join(" · ");
    if (typeof data.committed_fraction === "number") {
      const pct = Math.round(100 * data.committed_fraction);
      committed.style.width = `${pct}%`;
      fraction.textContent = `${pct}% committed`;
    }
    if (typeof data.text === "string") {
      renderPass(data.phase === "tokens" ? previous + data.text : data.text);
    }
  }

  const describe = {
    started: () => "episode started",
    turn: (d) => `step ${d.step} ${d.role} (${d.backend}): ${d.valid ? (d.tool || "turn") : "invalid: " + d.error}${d.cached ? " [cached]" : ""}`,
    tool: (d) => `step ${d.step} tool ${d.tool}: ${d.ok ? "ok" : "error: " + d.error}`,
    finished: (d) => `finished: ${d.status}${d.answer ? " — " + d.answer : ""}`,
    dead_lettered: (d) => `dead-lettered at step ${d.step}: ${d.error}`,
  };

  const body = document.getElementById("episode-body");
  let refreshing = null;
  function refreshBody() {  // at most one fetch in flight; bursts of events coalesce
    if (!body || refreshing) return;
    refreshing = setTimeout(async () => {
      try {
        const reply = await fetch(body.dataset.bodyUrl, { credentials: "same-origin" });
        if (reply.ok) body.innerHTML = await reply.text();
      } finally {
        refreshing = null;
      }
    }, 250);
  }
  function setBadge(status) {
    const badge = document.getElementById("status");
    badge.textContent = status;
    badge.className = `status status-${status}`;
  }

  if (live.dataset.finished === "1" || !window.EventSource) return;
  const source = new EventSource(live.dataset.eventsUrl);
  source.onopen = () => { state.textContent = "following"; };
  source.onerror = () => { state.textContent = "reconnecting…"; };
  source.addEventListener("model_progress", (e) => onProgress(JSON.parse(e.data)));
  for (const name of Object.keys(describe)) {
    source.addEventListener(name, (e) => {
      const data = JSON.parse(e.data);
      addLog(describe[name](data), name === "dead_lettered" ? "error" : "");
      if (name === "started") {
        setBadge("running");
        const done = document.getElementById("finished-at");
        if (done) done.textContent = "";  // a retried episode is not finished any more
      }
      if (name === "finished" && data.status) setBadge(data.status);
      if (name === "dead_lettered") setBadge("dead_lettered");
      refreshBody();
    });
  }
  source.addEventListener("end", (e) => {
    source.close();
    const data = JSON.parse(e.data);
    state.textContent = `ended (${data.status})`;
    if (data.status) setBadge(data.status);
    refreshBody();
  });
})();
