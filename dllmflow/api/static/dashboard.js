// Dashboard buttons: any element with data-action/data-url calls the API with the session
// cookie plus the anti-CSRF header, then reloads (or opens the episode the call returned).
"use strict";

function csrfHeaders() {
  const body = document.body.dataset;
  return { [body.csrfHeader]: body.csrfValue, "Content-Type": "application/json" };
}

function flash(message, isError) {
  const box = document.getElementById("flash");
  if (!box) return;
  box.textContent = message;
  box.classList.toggle("error", Boolean(isError));
  box.hidden = false;
}

async function callApi(method, url, body) {
  const response = await fetch(url, {
    method, headers: csrfHeaders(), credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { /* empty body */ }
  if (!response.ok) throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
  return data;
}

function afterCall(data) {
  if (data && data.id && data.id !== document.getElementById("live")?.dataset.episode) {
    window.location.href = `/episodes/${encodeURIComponent(data.id)}`;
  } else {
    window.location.reload();
  }
}

// Budget fields beside a button (a [data-budgets] cell): the filled ones become the body's
// {"budgets": {...}}; none filled sends no body.
function budgetsBody(button) {
  const scope = button.closest("[data-budgets]");
  if (!scope) return undefined;
  const budgets = {};
  for (const input of scope.querySelectorAll("input[data-budget]")) {
    if (input.value !== "") budgets[input.dataset.budget] = Number(input.value);
  }
  return Object.keys(budgets).length ? { budgets } : undefined;
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  button.disabled = true;
  try {
    afterCall(await callApi(button.dataset.action, button.dataset.url, budgetsBody(button)));
  } catch (err) {
    flash(err.message, true);
    button.disabled = false;
  }
});

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form.replay");
  if (!form) return;
  event.preventDefault();
  const body = { from_step: Number(form.elements.from_step.value) };
  if (form.elements.policy.value) body.policy = form.elements.policy.value;
  try {
    afterCall(await callApi("POST", form.dataset.url, body));
  } catch (err) {
    flash(err.message, true);
  }
});

// The episode list refreshes itself: every few seconds the same URL (filters and page kept) is
// fetched and its table body and status counts are swapped in, so new episodes and status
// changes show without a reload. Paused while the tab is hidden.
(function () {
  const table = document.getElementById("episodes");
  if (!table) return;
  const every = Number(table.dataset.refreshMs || 5000);
  async function refresh() {
    if (document.hidden) return;
    try {
      const reply = await fetch(window.location.href, { credentials: "same-origin" });
      if (!reply.ok) return;
      const page = new DOMParser().parseFromString(await reply.text(), "text/html");
      for (const selector of ["#episodes tbody", "nav.filters[aria-label='status filter']"]) {
        const fresh = page.querySelector(selector);
        const here = document.querySelector(selector);
        if (fresh && here && fresh.innerHTML !== here.innerHTML) here.innerHTML = fresh.innerHTML;
      }
    } catch (_) { /* the next tick tries again */ }
  }
  setInterval(refresh, every);
})();
