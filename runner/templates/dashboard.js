// orchestrator dashboard: confirmation dialogs, the live event stream, the runs refresh.
// HTML arriving from the server is escaped there; this script never builds HTML from data.
"use strict";

const HEADERS = { "Content-Type": "application/json", "X-Orchestrator-Dashboard": "1" };

function setupDialogs() {
  document.querySelectorAll("[data-open]").forEach((button) => {
    button.addEventListener("click", () => {
      const dialog = document.getElementById(button.dataset.open);
      if (dialog) dialog.showModal();
    });
  });
  document.querySelectorAll("dialog form[data-action]").forEach((form) => {
    const dialog = form.closest("dialog");
    const error = form.querySelector("[data-error]");
    form.querySelector("[data-cancel]").addEventListener("click", (event) => {
      event.preventDefault();
      dialog.close();
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const reasonField = form.querySelector("textarea[name=reason]");
      const body = {};
      if (reasonField) {
        const reason = reasonField.value.trim();
        if (!reason) { error.textContent = "Please give a reason."; return; }
        body.reason = reason;
      }
      const confirmButton = form.querySelector("[data-confirm]");
      confirmButton.disabled = true;
      try {
        const reply = await fetch(form.dataset.action, {
          method: "POST", headers: HEADERS, credentials: "same-origin",
          body: JSON.stringify(body),
        });
        if (reply.status === 401) { window.location.href = "/login"; return; }
        if (!reply.ok) {
          const data = await reply.json().catch(() => ({}));
          error.textContent = data.error || ("The runner answered " + reply.status);
          return;
        }
        dialog.close();
        if (!document.getElementById("events")) window.location.reload();
      } catch (err) {
        error.textContent = "The runner cannot be reached: " + err;
      } finally {
        confirmButton.disabled = false;
      }
    });
  });
}

// The list of the iteration's events; a new iteration gets a new open group (built with the
// DOM API: no HTML from data).
function groupFor(container, iteration) {
  const groups = container.querySelectorAll("details.iteration");
  let group = container.querySelector('details.iteration[data-iteration="' + Number(iteration) + '"]');
  if (!group) {
    groups.forEach((old) => { old.open = false; });
    group = document.createElement("details");
    group.className = "iteration";
    group.dataset.iteration = String(Number(iteration));
    group.open = true;
    const summary = document.createElement("summary");
    const title = document.createElement("b");
    title.textContent = Number(iteration) ? "Iteration " + Number(iteration) : "Preparing";
    summary.appendChild(title);
    group.appendChild(summary);
    group.appendChild(document.createElement("ol")).className = "events";
    container.appendChild(group);
  }
  return group.querySelector("ol.events");
}

function setupStream() {
  const list = document.getElementById("events");
  if (!list) return;
  const live = document.getElementById("live");
  const url = list.dataset.stream + "?after=" + encodeURIComponent(list.dataset.after || "0");
  const source = new EventSource(url);
  source.addEventListener("ev", (message) => {
    const data = JSON.parse(message.data);
    if (document.getElementById("ev-" + data.seq)) return;
    groupFor(list, data.iteration).insertAdjacentHTML("beforeend", data.html);  // escaped
    if (data.state) {
      document.querySelectorAll(".facts [data-state]").forEach((badge) => {
        badge.textContent = data.state;
        badge.className = "badge s-" + data.state;
      });
    }
    for (const [field, selector] of [["cost", "[data-cost]"], ["killed_by", "[data-killed-by]"],
                                     ["reason", "[data-reason]"]]) {
      const target = document.querySelector(selector);
      if (target && data[field]) target.textContent = data[field];
    }
    const near = window.innerHeight + window.scrollY >= document.body.scrollHeight - 400;
    if (near) window.scrollTo(0, document.body.scrollHeight);
  });
  source.addEventListener("end", (message) => {
    source.close();
    live.textContent = "finished";
    live.classList.add("off");
    const kill = document.getElementById("kill-button");
    if (kill) kill.remove();
    document.body.dataset.finished = JSON.parse(message.data).state;
  });
  source.onerror = () => { live.textContent = "reconnecting"; live.classList.add("off"); };
  source.onopen = () => { live.textContent = "live"; live.classList.remove("off"); };
}

// Every element with data-refresh (the runs table's body, today's spend) is fetched again.
function setupRefresh() {
  const parts = document.querySelectorAll("[data-refresh]");
  if (!parts.length) return;
  setInterval(() => {
    if (document.querySelector("dialog[open]")) return;
    parts.forEach(async (part) => {
      try {
        const reply = await fetch(part.dataset.refresh, { credentials: "same-origin" });
        if (reply.ok) part.innerHTML = await reply.text();  // escaped by the server
      } catch (err) { /* the next tick tries again */ }
    });
  }, 3000);
}

document.addEventListener("DOMContentLoaded", () => {
  setupDialogs();
  setupStream();
  setupRefresh();
});
