// The UI's behaviour beside htmx: tokens kept in this tab, bearer headers, problems shown as text, a job's events
// stream, downloads and the forms that call the JSON API. Text from the service is only ever set as textContent.
"use strict";

const TOKENS = { client: "learngene.client-token", admin: "learngene.admin-token" };

function token(kind) { return sessionStorage.getItem(TOKENS[kind]) || ""; }

// Admin routes take the admin token, every other route the client token (none where the deployment asks none).
function tokenFor(path) {
  const admin = /^\/(ui\/parts|v1)\/admin\//.test(new URL(path, location.origin).pathname);
  return token(admin ? "admin" : "client");
}

function authHeaders(path, extra) {
  const headers = Object.assign({}, extra || {});
  const value = tokenFor(path);
  if (value) headers.Authorization = "Bearer " + value;
  return headers;
}

function notice(text) {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.hidden = !text;
}

function openTokens(why) {
  const form = document.getElementById("tokens");
  form.hidden = false;
  document.getElementById("tokens-toggle").setAttribute("aria-expanded", "true");
  if (why) document.getElementById("tokens-why").textContent = why;
  document.getElementById(why && why.includes("admin") ? "admin-token" : "client-token").focus();
}

// A problem document's words (RFC 9457: detail, and errors[] naming each field), or the status line.
async function problemText(response) {
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!body || typeof body !== "object") return response.status + " " + response.statusText;
  const fields = (body.errors || []).map((e) => (e.loc || []).join(".") + ": " + e.msg);
  return [body.detail || body.title || String(response.status), ...fields].join("; ");
}

function refused(status, path, text) {
  if (status === 401 || status === 403) {
    const admin = /\/admin\//.test(path);
    openTokens((admin ? "This needs the admin token: " : "This service asks for a client token: ") + text);
  }
  notice(text);
}

function retryAll() {
  notice("");
  document.querySelectorAll("[hx-trigger*='lg-retry']").forEach((el) => htmx.trigger(el, "lg-retry"));
  document.querySelectorAll("[data-events]").forEach(follow);
}

// ------------------------------------------------------------------------------------------------ htmx hooks
document.addEventListener("htmx:configRequest", (event) => {
  Object.assign(event.detail.headers, authHeaders(event.detail.path));
  // An empty field is no filter: left out, not sent as "" (which the API refuses as not a number).
  const data = event.detail.formData;
  for (const [name, value] of Array.from(data.entries())) if (value === "") data.delete(name);
});

document.addEventListener("htmx:responseError", (event) => {
  const xhr = event.detail.xhr;
  let text = xhr.status + " " + xhr.statusText;
  try {
    const body = JSON.parse(xhr.responseText);
    const fields = (body.errors || []).map((e) => (e.loc || []).join(".") + ": " + e.msg);
    text = [body.detail || body.title || text, ...fields].join("; ");
  } catch (e) { /* not a problem document */ }
  refused(xhr.status, event.detail.pathInfo.requestPath, text);
});

document.addEventListener("htmx:sendError", () => notice("The service did not answer; retrying."));
document.addEventListener("htmx:afterSwap", () => { const box = document.getElementById("notice"); if (box.textContent.startsWith("The service did not")) notice(""); });

// ------------------------------------------------------------------------------------------------ tokens
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("tokens");
  const toggle = document.getElementById("tokens-toggle");
  document.getElementById("client-token").value = token("client");
  document.getElementById("admin-token").value = token("admin");
  toggle.addEventListener("click", () => {
    form.hidden = !form.hidden;
    toggle.setAttribute("aria-expanded", String(!form.hidden));
    if (!form.hidden) document.getElementById("client-token").focus();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    for (const kind of Object.keys(TOKENS)) {
      const value = form.elements[kind].value.trim();
      if (value) sessionStorage.setItem(TOKENS[kind], value); else sessionStorage.removeItem(TOKENS[kind]);
    }
    form.hidden = true;
    toggle.setAttribute("aria-expanded", "false");
    retryAll();
  });
  document.getElementById("tokens-forget").addEventListener("click", () => {
    Object.values(TOKENS).forEach((key) => sessionStorage.removeItem(key));
    form.reset();
  });
  document.querySelectorAll("[data-events]").forEach(follow);
});

// ------------------------------------------------------------------------------------------------ events stream
// EventSource cannot send a bearer header, so the stream is read with fetch; each event re-renders the job part
// (hx-sync queues the last), the `end` event last. A dropped stream resumes after the last event id.
const following = new WeakMap();

async function follow(el) {
  if (following.get(el)) return;
  following.set(el, true);
  const url = el.dataset.events;
  let last = null;
  for (let attempt = 0; ; attempt++) {
    try {
      const headers = authHeaders(url, { Accept: "text/event-stream" });
      if (last !== null) headers["Last-Event-ID"] = last;
      const response = await fetch(url, { headers, cache: "no-store" });
      if (!response.ok) {
        refused(response.status, url, await problemText(response));
        break;  // a refusal: retried once a token is given (retryAll)
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "", ended = false;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
          let name = "message";
          for (const line of block.split(/\r?\n/)) {
            if (line.startsWith("id:")) last = line.slice(3).trim();
            else if (line.startsWith("event:")) name = line.slice(6).trim();
          }
          if (block.startsWith(":")) continue;  // a keep-alive comment
          if (name === "end") ended = true;
          htmx.trigger(el, "lg-refresh");
        }
      }
      if (ended) break;
    } catch (error) {
      notice("The job's event stream dropped; reconnecting.");
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(1000 * (attempt + 1), 5000)));
  }
  htmx.trigger(el, "lg-refresh");
  following.set(el, false);
}

// ------------------------------------------------------------------------------------------------ actions
async function call(method, url, body) {
  const headers = authHeaders(url, body === undefined ? {} : { "Content-Type": "application/json" });
  if (method === "POST") headers["Idempotency-Key"] = crypto.randomUUID();
  return fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

// A download link carries the tab's token where one is kept: fetched here, handed over as a blob.
document.addEventListener("click", async (event) => {
  const link = event.target.closest("a[data-download]");
  if (!link || !tokenFor(link.href)) return;
  event.preventDefault();
  const response = await fetch(link.href, { headers: authHeaders(link.href) });
  if (!response.ok) { refused(response.status, link.href, await problemText(response)); return; }
  const url = URL.createObjectURL(await response.blob());
  const save = document.createElement("a");
  save.href = url;
  save.download = link.dataset.download;
  document.body.append(save);
  save.click();
  save.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-cancel]");
  if (!button) return;
  button.disabled = true;
  const response = await call("DELETE", button.dataset.cancel);
  if (!response.ok) refused(response.status, button.dataset.cancel, await problemText(response));
  document.querySelectorAll("#job").forEach((el) => htmx.trigger(el, "lg-refresh"));
});

function show(id, text) { document.getElementById(id).textContent = text; }

async function submitted(response, resultId, pageOf) {
  if (response.ok) {
    const job = await response.json();
    location.assign(pageOf(job));
    return;
  }
  const text = await problemText(response);
  show(resultId, text);
  refused(response.status, new URL(response.url).pathname, text);
}

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (form.id === "new-form") {
    event.preventDefault();
    // The preview is rebuilt from the fields as they are now; its request is what is sent.
    const fields = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value !== "") fields.append(name, value);
    await htmx.ajax("GET", "/ui/parts/request?" + fields, { target: "#preview", swap: "innerHTML" });
    const request = JSON.parse(document.getElementById("built").dataset.request);
    show("submit-result", "Submitting…");
    const response = await call("POST", "/v1/initializations", request);
    await submitted(response, "submit-result", (job) => "/ui/jobs/initialization/" + encodeURIComponent(job.id));
  } else if (form.id === "condense-form") {
    event.preventDefault();
    let request;
    try { request = JSON.parse(form.elements.condensation.value); } catch (error) {
      show("condense-result", "Not JSON: " + error.message);
      return;
    }
    const response = await call("POST", "/v1/admin/condensations", request);
    await submitted(response, "condense-result", (job) => "/ui/jobs/condensation/" + encodeURIComponent(job.id));
  } else if (form.id === "alias-form") {
    event.preventDefault();
    const f = form.elements;
    const body = f.rollback.checked ? { rollback: true } : { version: Number(f.version.value) || null };
    const url = "/v1/admin/template-sets/" + encodeURIComponent(f.name.value.trim()) + "/aliases/" +
      encodeURIComponent(f.alias.value.trim());
    const response = await call("PUT", url, body);
    if (response.ok) {
      const moved = await response.json();
      show("alias-result", moved.name + "@" + moved.alias + " now names version " + moved.version +
        " (history " + moved.history.join(" → ") + ")");
    } else {
      const text = await problemText(response);
      show("alias-result", text);
      refused(response.status, url, text);
    }
  }
});
