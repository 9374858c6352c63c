/* AI-Implement admin UI: a thin client of the documented /api endpoints. */
"use strict";

const TOKEN_KEY = "aiimpl.token";
const UNDONE_KEY = "aiimpl.undone";  // (see sayUndone)
const ENDED_KEY = "aiimpl.ended";  // (see initSignin)
const REFRESH_MS = 3000;

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function pick(obj, ...names) {
  for (const n of names) { if (obj && obj[n] !== undefined && obj[n] !== null) return obj[n]; }
  return undefined;
}

function asList(body, ...keys) {
  if (Array.isArray(body)) return body;
  for (const k of keys) { if (body && Array.isArray(body[k])) return body[k]; }
  return [];
}

/* An ISO 8601 time with its offset; anything else (a runner may report any text) is shown as given:
   the browser's Date parser reads a time without an offset as local and turns words into dates. */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;

function when(value) {
  if (!value) return "";
  const d = ISO_TIME.test(String(value)) ? new Date(value) : new Date(NaN);
  return isNaN(d) ? esc(value)
    : `<time datetime="${esc(value)}">${esc(d.toLocaleString(undefined, {timeZoneName: "short"}))}</time>`;
}

function link(url, text) {
  if (!url) return "";
  const safe = /^https?:\/\//.test(url) ? url : "#";
  return `<a href="${esc(safe)}" target="_blank" rel="noopener">${esc(text || url)}</a>`;
}

const UNREACHABLE = "The server could not be reached";

/* How long a request may go unanswered (ms): then it is given up, and the button that sent it takes
   clicks again (a request left waiting for good left its button busy for good). A read, or a
   sign-in, changed nothing; any other request may have been done all the same, its answer lost on
   the way back (or still to come): that is said, not that it failed. */
const ANSWER_MS = 30000;

function unanswered(method, path, timedOut) {
  const changesNothing = method === "GET" || path === "/api/auth";
  if (!timedOut && changesNothing) return UNREACHABLE;
  const why = timedOut ? `The server did not answer within ${ANSWER_MS / 1000} s` : `${UNREACHABLE}, or its answer was lost`;
  return changesNothing ? why : `${why}: this may have been done all the same. Refresh the page to see whether it was.`;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = {"Accept": "application/json"};
  if (token()) headers["Authorization"] = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const ask = new AbortController();
  const timer = setTimeout(() => ask.abort(), ANSWER_MS);
  let resp;
  let data = null;
  try {
    try {
      resp = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        signal: ask.signal});
    } catch (_) {
      // no answer at all (the server is down, the network gone, ANSWER_MS passed): said in words, not
      // in the browser's own ("Failed to fetch", "NetworkError when attempting to fetch resource.")
      throw new ApiError(0, {error: unanswered(method, path, ask.signal.aborted)});
    }
    try { data = await resp.json(); } catch (_) { data = null; }
    // (an answer whose body did not come in time is not taken for an empty one)
    if (ask.signal.aborted) throw new ApiError(0, {error: unanswered(method, path, true)});
  } finally { clearTimeout(timer); }
  if (resp.status === 401 && path !== "/api/auth") {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.setItem(ENDED_KEY, "1");
    keepDrafts("signin");
    if (method !== "GET") sessionStorage.setItem(UNDONE_KEY, location.pathname);
    location.assign(`/ui/signin?next=${encodeURIComponent(location.pathname)}`);
    throw new ApiError(401, data);
  }
  if (!resp.ok) {
    const error = new ApiError(resp.status, data);
    error.retryAfter = resp.headers.get("Retry-After");
    throw error;
  }
  return data;
}

function flash(message, kind = "ok") {
  const el = document.getElementById("flash");
  if (!el) return;
  el.textContent = message;
  el.className = `flash ${kind}`;
  delete el.dataset.refresh;
}

/* A form sent again takes away what the last action said: "Mapping ENG saved" left above a save
   that then failed read as if that one had succeeded. */
function clearFlash() {
  const el = document.getElementById("flash");
  if (!el) return;
  el.textContent = "";
  el.className = "";
  delete el.dataset.refresh;
}

/* Run fn now and every few seconds: a refresh that fails says why (the server or the database
   is down), and the next one that succeeds takes that message away again. A refresh is not asked
   for again while the last one is on its way (a slow server is not sent one more request every few
   seconds by every open panel); one unanswered for ANSWER_MS fails, which is said too (see api).
   A list (`table`, a selector) whose first refresh fails says why in place of "Loading…". */
function every(fn, table = null) {
  let waiting = false;  // (a refresh is on its way)
  const failed = (message) => {
    flash(`Could not refresh: ${message}`, "error");
    document.getElementById("flash").dataset.refresh = "1";
    const tbody = table && document.querySelector(`${table} tbody`);
    if (tbody && !tbody.dataset.filled) {
      const cols = document.querySelectorAll(`${table} thead th`).length || 1;
      tbody.innerHTML = `<tr><td colspan="${cols}">${esc(`Could not load: ${message}`)}</td></tr>`;
    }
  };
  const run = () => {
    if (waiting) return;
    waiting = true;
    Promise.resolve().then(fn).then(() => {
      const el = document.getElementById("flash");
      if (el && el.dataset.refresh) {
        el.textContent = "";
        el.className = "";
        delete el.dataset.refresh;
      }
    }, (e) => failed(e.message)).finally(() => { waiting = false; });
  };
  run();
  const id = setInterval(() => { if (!document.hidden) run(); }, REFRESH_MS);
  window.addEventListener("beforeunload", () => clearInterval(id));
}

/* Answers can come back in another order than they were asked for (a slow one, a refresh overtaken
   by a click or by a changed selection). A panel takes a ticket before each request of its list:
   ticket() answers a function that says whether that request's answer may still be shown, that is
   whether no answer to a later request was shown before it (and, once it says yes, no earlier one
   will be). A panel with a selector also drops an answer for a value no longer selected. */
function answerOrder() {
  let asked = 0;
  let shown = 0;
  return () => {
    const mine = ++asked;
    return () => {
      if (mine < shown) return false;
      shown = mine;
      return true;
    };
  };
}

/* A list the API cuts to its first `limit` rows, kept up to date: `path` (with the list's limit) is
   asked for every few seconds, PAGE_ROWS rows at first, and "Show more" asks for as many again up
   to `max` (the API's maximum). render(body) shows an answer and returns how many rows it showed;
   an answer is shown only if no answer to a later request was shown before it (answerOrder). The
   note under the table (#<id>-more, with #<id>-shown and #<id>-show-more) says the list is cut
   short whenever an answer filled its limit; say(n, atMax) words it; then `after` (if any) runs.
   Returns the load function (to run again after an action on a row). */
const PAGE_ROWS = 100;

function cappedList(id, path, max, say, render, after = null) {
  const note = document.getElementById(`${id}-more`);
  const button = document.getElementById(`${id}-show-more`);
  const ticket = answerOrder();
  let limit = PAGE_ROWS;
  const load = async () => {
    const asked = limit;
    const mayShow = ticket();
    const body = await api("GET", `${path}${path.includes("?") ? "&" : "?"}limit=${asked}`);
    if (!mayShow()) return;
    const count = render(body);
    note.hidden = count < asked;
    document.getElementById(`${id}-shown`).textContent = say(asked, asked >= max);
    button.hidden = asked >= max;
    if (after) await after();
  };
  every(load, `#${id}-table`);
  button.addEventListener("click", () => {
    limit = Math.min(limit + PAGE_ROWS, max);
    load().catch((e) => flash(e.message, "error"));
  });
  return load;
}

/* Show rows (each one `<tr>…</tr>` of HTML) in a table, or a row saying `empty`. A row whose HTML
   is the one already shown is left in place, untouched: a refresh that changes nothing changes
   nothing on the page, so the keyboard focus on a row's button, text being selected (an error
   being copied) and a screen reader's place stay where they are, and the live region announces
   only the rows that changed. */
const ROW_HTML = new WeakMap();

function fillRows(table, rowsHtml, cols, empty) {
  const tbody = document.querySelector(`${table} tbody`);
  const wanted = rowsHtml.length ? rowsHtml : [`<tr><td colspan="${cols}">${esc(empty)}</td></tr>`];
  const shown = new Map();
  for (const tr of tbody.children) {
    const html = ROW_HTML.get(tr);
    if (html === undefined) continue;
    if (!shown.has(html)) shown.set(html, []);
    shown.get(html).push(tr);
  }
  const rows = wanted.map((html) => {
    const same = shown.get(html);
    if (same && same.length) return same.shift();
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    const tr = template.content.firstElementChild;
    ROW_HTML.set(tr, html);
    return tr;
  });
  // the rows no longer shown go first, then the new ones are put in place around those kept: a
  // row kept is moved only when rows were reordered (moving a row takes the focus away from it)
  for (const stale of shown.values()) stale.forEach((tr) => tr.remove());
  [...tbody.children].filter((tr) => !ROW_HTML.has(tr)).forEach((tr) => tr.remove());
  rows.forEach((tr, i) => { if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null); });
  tbody.dataset.filled = "1";
}

/* An action on a row refreshes its list, which may replace the row (Pause became Resume) or remove
   it (a secret deleted): a button taken out of the page takes the keyboard focus with it, to the
   page's start. The focus goes back to the same row's button (the first of `acts` it has), else to
   the row now in its place (`index`, the row's place before) or the one before it, else to
   `fallback`. A focus that went elsewhere meanwhile (a click, Tab) is left where it is. */
function refocusRow(table, matches, acts, index, fallback = null) {
  const active = document.activeElement;
  if (active && active !== document.body && active.isConnected) return;
  const rows = [...document.querySelectorAll(`${table} tbody tr`)];
  const button = (tr) => tr && (acts.map((a) => tr.querySelector(`button[data-act="${a}"]`)).find(Boolean)
    || tr.querySelector("button"));
  const target = button(rows.find(matches)) || button(rows[index]) || button(rows[index - 1]) || fallback;
  if (target) target.focus();
}

function rowIndex(tr) { return [...tr.parentElement.children].indexOf(tr); }

/* Runs `fn` for a click on `btn` unless the last click's run is still on its way (a second Sync
   workflows would write the same files again, and race the first; a second Cancel or Retry would
   be refused): a flag, not `disabled`, as a button disabled loses the keyboard focus. A row's
   action ends once its list has been read again (the row then shows what the action did: a Delete
   clicked again before would be said deleted meanwhile), which a slow server makes a while: the
   button says it is busy meanwhile (aria-busy, shown), not taking a click it drops. Answers
   whether `fn` ran. */
async function oneAtATime(btn, fn) {
  if (btn.dataset.busy) return false;
  btn.dataset.busy = "1";
  btn.setAttribute("aria-busy", "true");
  try { await fn(); } finally {
    delete btn.dataset.busy;
    btn.removeAttribute("aria-busy");
  }
  return true;
}

function statusBadge(status, extra) {
  return `<span class="status s-${esc(status)}">${esc(status)}${extra ? ` (${esc(extra)})` : ""}</span>`;
}

/* A form marked data-keep-draft outlives the end of the admin session and the page: what was
   typed is kept in this tab's session storage when a request is refused for it, or the page is
   left (a reload, Back, another panel), and put back on the form's next page (never a password
   field's value; none once signed out). A form as it was served (nothing typed, nothing filled in
   by Edit) is not kept: there is nothing to put back, nor to say was put back. */
function draftKey(form) { return `aiimpl.draft:${location.pathname}:${form.id}`; }

function edited(el) {
  if (el.type === "checkbox" || el.type === "radio") return el.checked !== el.defaultChecked;
  if (el.options) return [...el.options].some((o) => o.selected !== o.defaultSelected);
  return el.value !== el.defaultValue;
}

let draftsKept = false;  // (by the end of the admin session: leaving the page then keeps its reason)

function keepDrafts(reason) {
  if (draftsKept) return;
  draftsKept = reason === "signin";
  document.querySelectorAll("form[data-keep-draft]").forEach((form) => {
    if (![...form.elements].some((el) => el.name && el.type !== "password" && edited(el))) return;
    const values = {};
    for (const el of form.elements) {
      if (!el.name || el.type === "password") continue;
      values[el.name] = el.type === "checkbox" ? el.checked : el.value;
    }
    // (a mapping's form editing one: its team key read-only, which the restored form keeps)
    const readOnly = [...form.elements].filter((el) => el.name && el.readOnly).map((el) => el.name);
    const draft = {values, readOnly, reason};
    sessionStorage.setItem(draftKey(form), JSON.stringify(draft));
  });
}

/* Puts a kept draft back into `form`; answers it ({values, readOnly}: the fields that were
   read-only), or null when there was none. */
function restoreDraft(form) {
  const raw = sessionStorage.getItem(draftKey(form));
  if (raw === null) return null;
  sessionStorage.removeItem(draftKey(form));
  let draft;
  try { draft = JSON.parse(raw); } catch (_) { return null; }
  const values = (draft && draft.values) || {};
  for (const el of form.elements) {
    if (!el.name || el.type === "password" || !(el.name in values)) continue;
    if (el.type === "checkbox") el.checked = !!values[el.name]; else el.value = values[el.name];
  }
  flash(draft.reason === "left"
    ? "The form holds what you had typed before leaving the page: save it, or Clear it."
    : "Signed in again: the form holds what you had typed. Check it and save it again.");
  return {values, readOnly: Array.isArray(draft.readOnly) ? draft.readOnly : []};
}

/* An action refused because the admin session had ended (a secret set, a job cancelled, the
   runner mode changed) was not done: once signed in again, back on its page, that is said, unless
   a kept draft says it already. A secret's value is never kept: it is typed again. */
function sayUndone() {
  const where = sessionStorage.getItem(UNDONE_KEY);
  if (where === null) return;
  sessionStorage.removeItem(UNDONE_KEY);
  const said = document.getElementById("flash");
  if (where !== location.pathname || (said && said.textContent)) return;
  flash("Signed in again: what you last did was not done (the admin session had ended first). "
    + "Do it again.", "error");
}

/* ---- sign in ---------------------------------------------------------------------------- */

function initSignin() {
  const form = document.getElementById("signin-form");
  // led here by a request the server refused: the session ended (its time was up, or a sign-out
  // elsewhere ended it), which an operator watching a panel saw as the page going away unexplained
  if (sessionStorage.getItem(ENDED_KEY) !== null) {
    sessionStorage.removeItem(ENDED_KEY);
    flash("The admin session has ended: sign in again to go on.", "info");
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const err = document.getElementById("signin-error");
    err.textContent = "";
    try {
      const body = await api("POST", "/api/auth", {code: form.code.value});
      sessionStorage.setItem(TOKEN_KEY, pick(body, "token", "sessionToken"));
      const next = new URLSearchParams(location.search).get("next");
      location.assign(next && next.startsWith("/ui/") ? next : "/ui/projects");
    } catch (e) {
      // too soon after wrong codes: the code was not checked, so say when to try again
      err.textContent = e.retryAfter
        ? `${e.message}: too many wrong codes, try again in ${e.retryAfter} s` : e.message;
      form.code.focus();  // (to type it again)
      form.code.select();
    }
  });
}

/* ---- projects ----------------------------------------------------------------------------- */

const MAPPING_FIELDS = ["teamKey", "owner", "repo", "defaultBranch", "provider", "awsRegion", "executionMode",
  "sessionMode", "machineCpus", "machineMemoryMb", "branchPrefix", "maxInProgressAiIssues", "planningWorkflowFile",
  "planningEnabled", "extraEnv", "ticketing"];

function fieldOfMessage(message, form = null) {
  // "teamKey, owner, and repo are required": the first of them left empty, not the first named
  const several = /^([A-Za-z]+(?:, [A-Za-z]+)*,? and [A-Za-z]+) are required$/.exec(message || "");
  if (several && form) {
    const names = several[1].split(/,? and |, /);
    const empty = names.find((n) => { const el = form.querySelector(`[name="${n}"]`); return el && !el.value.trim(); });
    if (empty) return empty;
  }
  const m = /^([A-Za-z]+)/.exec(message || "");
  if (!m) return null;
  if (message.startsWith("provider 'bedrock' is not supported")) return "executionMode";
  return MAPPING_FIELDS.includes(m[1]) ? m[1] : (message.includes("ticketing") ? "ticketing" : null);
}

function clearFieldErrors(form) {
  form.querySelectorAll(".field-error").forEach((p) => { p.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((i) => {
    i.removeAttribute("aria-invalid");
    i.removeAttribute("aria-describedby");
  });
}

function showFieldError(form, field, message) {
  const slot = field && form.querySelector(`.field-error[data-for="${field}"]`);
  const input = field && form.querySelector(`[name="${field}"]`);
  if (slot && input) {
    slot.textContent = message;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", slot.id);
    input.focus();
    return true;
  }
  return false;
}

function readMappingForm(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name || el.type === "submit" || el.type === "reset") continue;
    const kind = el.dataset.type;
    if (kind === "bool") { out[el.name] = el.checked; continue; }
    const raw = el.value.trim();
    // an emptied field clears the stored value (the API keeps a field the body omits)
    if (raw === "") { out[el.name] = null; continue; }
    if (kind === "int") out[el.name] = /^-?\d+$/.test(raw) ? Number(raw) : raw;
    else if (kind === "json") {
      try { out[el.name] = JSON.parse(raw); } catch (_) { throw {field: el.name, message: `${el.name} must be valid JSON`}; }
    } else out[el.name] = raw;
  }
  return out;
}

/* A mapping is known by its team key: editing one keeps it (a changed key would save another
   mapping beside it); Clear leaves the edit and creates a new one. */
function editing(form, team) {
  const key = form.querySelector("[name=teamKey]");
  form.dataset.editing = team || "";
  key.readOnly = !!team;
  const note = document.getElementById("mapping-editing");
  note.hidden = !team;
  note.textContent = team ? `Editing the mapping of ${team}; its team key stays. Clear to create another mapping.` : "";
}

/* Whether the team has a mapping now (its 404 is the answer; any other failure is thrown). */
async function mappingExists(team) {
  try { await api("GET", `/api/mappings/${encodeURIComponent(team)}`); } catch (e) {
    if (e.status !== 404) throw e;
    return false;
  }
  return true;
}

function fillMappingForm(form, m) {
  editing(form, m.teamKey);
  for (const el of form.elements) {
    if (!el.name) continue;
    const v = m[el.name];
    if (el.dataset.type === "bool") el.checked = !!v;
    else if (el.dataset.type === "json") el.value = v && Object.keys(v).length ? JSON.stringify(v) : "";
    else el.value = v ?? "";
  }
  form.scrollIntoView({behavior: "smooth"});
  form.querySelector("[name=owner]").focus();
}

function initProjects() {
  const form = document.getElementById("mapping-form");
  /* Edit fills the form once the mapping has been read: until then the form holds what it held
     before (another mapping's edit, what was typed, or nothing), which is not to be typed in nor
     saved as that edit, so its fields are disabled and busy meanwhile. The last Edit's answer is
     the one shown (answerOrder). */
  const fields = document.getElementById("mapping-fields");
  const opened = answerOrder();
  let reading = 0;  // (Edits whose mapping is on its way)
  const readingMapping = (team) => {
    reading += team ? 1 : -1;
    fields.disabled = reading > 0;
    if (reading > 0) {
      fields.setAttribute("aria-busy", "true");
      const note = document.getElementById("mapping-editing");
      note.hidden = false;
      note.textContent = `Reading the mapping of ${team}…`;
    } else {
      fields.removeAttribute("aria-busy");
      editing(form, form.dataset.editing || null);
    }
  };
  // the backends with workflow files: another mapping's Sync workflows could only be refused
  const syncs = new Set(JSON.parse(document.getElementById("mappings-table").dataset.syncBackends || "[]"));
  let mappings = [];
  // (Edit reads the list again without waiting for it: a later action's read may be answered first)
  const listed = answerOrder();
  const load = async () => {
    const mayShow = listed();
    const body = await api("GET", "/api/mappings");
    if (!mayShow()) return;
    mappings = asList(body, "mappings", "items");
    fillRows("#mappings-table", mappings.map((m) => {
      const team = esc(m.teamKey);
      const paused = !!m.paused;
      return `<tr data-team="${team}"><th scope="row">${team}</th><td>${esc(m.owner)}/${esc(m.repo)}</td>
        <td>${esc(m.defaultBranch)}</td><td>${esc(m.executionMode)}</td><td>${esc(m.provider)}</td>
        <td><label class="sr-only" for="cap-${team}">Cap for ${team}</label>
            <input class="cap" id="cap-${team}" inputmode="numeric" size="3" value="${esc(m.maxInProgressAiIssues ?? "")}">
            <button type="button" data-act="cap" aria-label="Set cap of ${team}">Set cap</button></td>
        <td>${paused ? '<span class="status s-paused">paused</span>' : '<span class="status s-running">active</span>'}</td>
        <td class="actions"><button type="button" data-act="edit" aria-label="Edit mapping ${team}">Edit</button>
          <button type="button" data-act="${paused ? "resume" : "pause"}"
            aria-label="${paused ? "Resume" : "Pause"} mapping ${team}">${paused ? "Resume" : "Pause"}</button>
          ${syncs.has(m.executionMode) ? `<button type="button" data-act="sync"
            aria-label="Sync workflows of ${team}">Sync workflows</button>` : ""}
          <button type="button" class="danger" data-act="delete" aria-label="Delete mapping ${team}">Delete</button></td></tr>`;
    }), 8, "No mappings yet: create one below.");
  };
  document.querySelector("#mappings-table").addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-act]");
    if (!btn) return;
    const team = btn.closest("tr").dataset.team;
    const path = `/api/mappings/${encodeURIComponent(team)}`;
    await oneAtATime(btn, async () => {
      const act = btn.dataset.act;
      const index = rowIndex(btn.closest("tr"));
      // after the list is read again: the focus back on this row's button (Pause became Resume)
      const refocus = () => refocusRow("#mappings-table", (tr) => tr.dataset.team === team,
        [{pause: "resume", resume: "pause"}[act] || act, act], index, form.querySelector("[name=teamKey]"));
      try {
        switch (act) {
          case "edit": {
            // the mapping as it is now, not as the list (read once) showed it: a save of what another
            // admin (or `aiimpl mappings`) changed meanwhile put the old values back; its row follows
            const mayShow = opened();
            let m;
            readingMapping(team);
            try { m = await api("GET", path); } catch (e) {
              // (what is said of it is what is shown: an earlier Edit's answer, come after, is not)
              mayShow();
              if (e.status === 404) throw e;  // (deleted meanwhile: said below)
              flash(`Could not read the mapping of ${team} to edit it (the form is as it was): ${e.message}`, "error");
              return;
            } finally { readingMapping(null); }
            if (mayShow()) fillMappingForm(form, m);
            load().catch(() => {});
            return;
          }
          case "pause": await api("PATCH", path, {paused: true}); flash(`${team} paused`); break;
          case "resume": await api("PATCH", path, {paused: false}); flash(`${team} resumed`); break;
          case "cap": {
            const raw = btn.parentElement.querySelector("input").value.trim();
            // an emptied field removes the cap, as in the mapping form (and `aiimpl mappings set-cap TEAM none`)
            const cap = raw === "" ? null : /^-?\d+$/.test(raw) ? Number(raw) : raw;
            try {
              await api("PATCH", path, {maxInProgressAiIssues: cap});
            } catch (e) {
              if (e.status === 404) throw e;  // (deleted meanwhile: said below)
              // refused: the box shows the cap in force again, not the value that was not taken
              flash(`Cap of ${team} not changed: ${e.message}`, "error");
              await load().catch(() => {});
              const stored = mappings.find((m) => m.teamKey === team);
              if (stored) btn.parentElement.querySelector("input").value = stored.maxInProgressAiIssues ?? "";
              refocus();
              return;
            }
            flash(cap === null ? `Cap of ${team} removed` : `Cap of ${team} set to ${raw}`);
            break;
          }
          case "sync": {
            const r = await api("POST", `${path}/sync-workflows`);
            const files = ["created", "updated", "unchanged"].filter((k) => asList(r && r[k]).length)
              .map((k) => `${k} ${r[k].join(", ")}`);
            const synced = `Workflows of ${team} synced: ${files.length ? files.join("; ") : "no workflow files"}`;
            const warnings = asList(r && r.warnings);
            // written, but their runs will fail: said as an error is, so it is not missed
            flash(warnings.length ? `${synced}. Warning: ${warnings.join(" ")}` : synced, warnings.length ? "error" : "ok");
            break;
          }
          case "delete":
            if (!confirm(`Delete the mapping of ${team}?`)) return;
            await api("DELETE", path); flash(`${team} deleted`);
            if (form.dataset.editing === team) form.reset();  // (a save would create it again)
            break;
        }
        await load();
        refocus();
      } catch (e) {
        if (e.status !== 404) { flash(e.message, "error"); return; }
        // deleted meanwhile (another admin, another tab): said so, and the list read again
        flash(`The mapping of ${team} no longer exists: it was deleted meanwhile.`, "error");
        // an edit of it under way is no longer one (what was typed stays: Save creates it anew)
        if (form.dataset.editing === team) editing(form, null);
        await load().catch(() => {});
        refocus();
      }
    });
  });
  // Enter in a row's cap box sets the cap, as its button does
  document.querySelector("#mappings-table").addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter" || !ev.target.classList.contains("cap")) return;
    ev.preventDefault();
    ev.target.parentElement.querySelector("button[data-act=cap]").click();
  });
  // a second click (or Enter) while a save is on its way sends nothing: it sent the same mapping
  // again, or, once the first had created it, said the new one's team key was taken
  const save = form.querySelector("button[type=submit]");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    oneAtATime(save, () => saveMapping());
  });
  const saveMapping = async () => {
    clearFieldErrors(form);
    clearFlash();
    const general = document.getElementById("mapping-error");
    general.textContent = "";
    let body;
    try { body = readMappingForm(form); } catch (e) { showFieldError(form, e.field, e.message); return; }
    try {
      if (form.dataset.editing) {
        // saving an edit updates the mapping; one deleted meanwhile would be created again, with
        // none of its secrets: said instead, and a second Save creates it
        const team = form.dataset.editing;
        if (!await mappingExists(team)) {
          editing(form, null);
          general.textContent = `The mapping of ${team} was deleted meanwhile (its team secrets with it): `
            + "Save again to create it anew.";
          await load().catch(() => {});
          return;
        }
      } else if (typeof body.teamKey === "string" && body.teamKey) {
        // a new mapping under a team key that has one would replace it, every setting not typed
        // here reset (POST /api/mappings creates or updates): refused, its Edit does that
        const team = body.teamKey;
        if (await mappingExists(team)) {
          showFieldError(form, "teamKey", `The team ${team} has a mapping already: change it with its Edit `
            + "button (a new one would replace all its settings).");
          return;
        }
      }
      await api("POST", "/api/mappings", body);
      flash(`Mapping ${body.teamKey} saved`);
      form.reset();
      await load();
      // the form below the list is emptied: what happened is said above the list, brought into view
      document.getElementById("flash").scrollIntoView({block: "nearest"});
    } catch (e) {
      if (!showFieldError(form, fieldOfMessage(e.message, form), e.message)) general.textContent = e.message;
    }
  };
  form.addEventListener("reset", () => {
    editing(form, null);
    clearFieldErrors(form);  // (the last save's words are about values no longer there)
    document.getElementById("mapping-error").textContent = "";
  });
  // a value the browser refuses (a pattern) is said by the browser: the last action's words go
  form.addEventListener("invalid", clearFlash, true);
  const draft = restoreDraft(form);
  if (draft && draft.readOnly.includes("teamKey") && draft.values.teamKey) editing(form, draft.values.teamKey);
  load().catch((e) => { fillRows("#mappings-table", [], 8, e.message); flash(e.message, "error"); });
}

/* ---- issues, blockers, jobs, sessions --------------------------------------------------------- */

/* The API answers at most ISSUES_MAX issues (the most recently updated) and BLOCKERS_MAX blockers
   (those blocked longest): the lists say when they are cut short, as the dispatch log does. */
const ISSUES_MAX = 500;
const BLOCKERS_MAX = 500;

function initIssues() {
  cappedList("issues", "/api/issues", ISSUES_MAX, (n, atMax) =>
    `Showing the ${n} most recently updated issues${atMax ? " (the most this view lists)" : ""}.`, (body) => {
    const issues = asList(body, "issues", "items");
    fillRows("#issues-table", issues.map((i) => {
      const job = pick(i, "latestJob", "job") || {};
      const key = pick(i, "issueKey", "key");
      // an issue without a URL (the tracker gave none) is still named
      return `<tr><th scope="row">${link(i.url, key) || esc(key)}</th><td>${esc(i.title)}</td>
        <td>${esc(pick(i, "teamKey", "team"))}</td><td>${esc(pick(i, "stageTitle", "stage"))}</td>
        <td>${esc(job.id ?? "")}</td><td>${job.status ? statusBadge(job.status, job.timeoutReason) : ""}</td>
        <td>${link(job.prUrl, job.prNumber ? `#${job.prNumber}` : "PR")}</td></tr>`;
    }), 7, "No tracked issues yet.");
    return issues.length;
  });
}

function initBlockers() {
  cappedList("blockers", "/api/blockers", BLOCKERS_MAX, (n, atMax) =>
    `Showing the ${n} issues blocked longest${atMax ? " (the most this view lists)" : ""}.`, (body) => {
    const rows = asList(body, "blockers", "items");
    fillRows("#blockers-table", rows.map((b) => `<tr><th scope="row">${esc(pick(b, "issueKey", "key"))}${
      b.title ? `<div class="muted issue-title">${esc(b.title)}</div>` : ""}</th>
      <td>${esc(pick(b, "teamKey", "team"))}</td><td><code>${esc(b.reason)}</code></td><td>${esc(b.message)}</td>
      <td>${when(pick(b, "since", "firstSeenAt", "lastSeenAt"))}</td></tr>`), 5, "Nothing is blocked.");
    return rows.length;
  });
}

/* Puts `text` in `el` unless it is there already: as fillRows does for rows, a refresh that changes
   nothing leaves the text (and a selection in it) in place. */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/* A job's steps, each failed one with its reason, under the job's own failure reason (if any).
   The open job's are read again with each refresh of the list: steps that did not change are left
   as they are (an operator selecting a step's error to copy it lost the selection every 3 s). */
const STEPS_HTML = new WeakMap();

async function showSteps(jobId, error) {
  const section = document.getElementById("job-steps");
  const steps = asList(await api("GET", `/api/jobs/${encodeURIComponent(jobId)}/steps`), "steps", "items");
  setText(document.getElementById("steps-job"), String(jobId));
  const failure = document.getElementById("steps-error");
  setText(failure, error || "");
  failure.hidden = !error;
  const list = document.getElementById("steps-list");
  const html = steps.length ? steps.map((s) => {
    const reason = pick(s.detail, "error");
    return `<li><span class="step-type">${esc(pick(s, "type"))}</span> ${statusBadge(pick(s, "status"))}
      <span class="muted">${when(pick(s, "startedAt", "started_at"))}${pick(s, "finishedAt", "finished_at") ? " → " + when(pick(s, "finishedAt", "finished_at")) : ""}</span>
      ${reason ? `<div class="step-error">${esc(reason)}</div>` : ""}</li>`;
  }).join("") : "<li>No steps reported yet.</li>";
  if (STEPS_HTML.get(list) !== html) {
    list.innerHTML = html;
    STEPS_HTML.set(list, html);
  }
  section.hidden = false;
  section.dataset.job = jobId;
}

const ACTIVE_STATUSES = ["unknown", "dispatched", "running"];
/* The API answers the newest jobs only (at most JOBS_MAX): the list says when it is cut short. */
const JOBS_MAX = 500;

function initJobs() {
  let byId = new Map();
  const open = document.getElementById("job-steps");
  const load = cappedList("jobs", "/api/jobs", JOBS_MAX, (n, atMax) => atMax
    ? `Showing the newest ${n} jobs; find older ones with aiimpl jobs list.`
    : `Showing the newest ${n} jobs.`, (body) => {
    const jobs = asList(body, "jobs", "items");
    byId = new Map(jobs.map((j) => [String(j.id), j]));
    fillRows("#jobs-table", jobs.map((j) => `<tr data-job="${esc(j.id)}"><th scope="row">${esc(j.id)}</th>
      <td>${esc(pick(j, "issueKey"))}</td><td>${esc(j.phase)}</td><td>${esc(j.backend)}${j.shadow ? " (shadow)" : ""}</td>
      <td>${statusBadge(j.status, pick(j, "timeoutReason"))}${pick(j, "launchAfter") ? ` <span class="muted">rate-limited, tried again ${when(pick(j, "launchAfter"))}</span>` : ""}</td><td>${link(pick(j, "prUrl"), j.prNumber ? `#${j.prNumber}` : "PR")}</td>
      <td>${when(pick(j, "createdAt"))}</td><td><button type="button" data-act="steps" aria-label="Steps of job ${esc(j.id)}">Steps</button>
      ${ACTIVE_STATUSES.includes(j.status) ? `<button type="button" class="danger" data-act="cancel" aria-label="Cancel job ${esc(j.id)}">Cancel</button>` : ""}</td></tr>`),
    8, "No jobs yet.");
    return jobs.length;
  }, async () => {
    if (!open.hidden && open.dataset.job) await showSteps(open.dataset.job, byId.get(open.dataset.job)?.error);
  });
  document.querySelector("#jobs-table").addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-act]");
    if (!btn) return;
    const id = btn.closest("tr").dataset.job;
    if (btn.dataset.act === "steps") {
      // the steps are shown below the whole list: the focus goes to them (a keyboard user would
      // otherwise tab through every row to get there)
      showSteps(id, byId.get(id)?.error).then(() => document.getElementById("steps-h").focus())
        .catch((e) => flash(e.message, "error"));
      return;
    }
    if (btn.dataset.act !== "cancel") return;
    const index = rowIndex(btn.closest("tr"));
    // (asked within: a second click while the first cancel is on its way asks nothing)
    const ran = await oneAtATime(btn, async () => {
      if (!confirm(`Cancel job ${id}? It ends failed and its run is stopped.`)) return;
      try { await api("POST", `/api/jobs/${encodeURIComponent(id)}/cancel`); flash(`Job ${id} cancelled`); await load(); }
      catch (e) { flash(e.message, "error"); }
    });
    if (ran) refocusRow("#jobs-table", (tr) => tr.dataset.job === id, ["cancel", "steps"], index);
  });
}

function initSessions() {
  const ticket = answerOrder();  // a refresh's answer never overwrites a later one (after Destroy)
  const load = async () => {
    const mayShow = ticket();
    const rows = asList(await api("GET", "/api/sessions"), "sessions", "items");
    if (!mayShow()) return;
    fillRows("#sessions-table", rows.map((s) => `<tr data-id="${esc(s.id)}"><th scope="row">${esc(s.id)}</th>
      <td>${esc(s.backend)}</td><td>${esc(s.state)}</td><td>${esc(pick(s, "jobId") ?? "")}</td><td>${esc(pick(s, "issueKey") ?? "")}</td>
      <td><button type="button" class="danger" data-act="destroy" aria-label="Destroy session ${esc(s.id)}">Destroy</button></td></tr>`), 6, "No active sessions.");
  };
  every(load, "#sessions-table");
  document.querySelector("#sessions-table").addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-act=destroy]");
    if (!btn) return;
    const id = btn.closest("tr").dataset.id;
    const index = rowIndex(btn.closest("tr"));
    const ran = await oneAtATime(btn, async () => {
      if (!confirm(`Destroy session ${id}?`)) return;
      try { await api("DELETE", `/api/sessions/${encodeURIComponent(id)}`); flash(`Session ${id} destroyed`); await load(); }
      catch (e) { flash(e.message, "error"); }
    });
    // (the session destroyed leaves the list: the focus goes to the next one's Destroy)
    if (ran) refocusRow("#sessions-table", (tr) => tr.dataset.id === id, ["destroy"], index);
  });
}

/* ---- outbox ---------------------------------------------------------------------------------- */

const OUTBOX_STATES = ["dead", "pending", "sending", "done", "shadow"];

/* The API answers the newest OUTBOX_MAX items at most. */
const OUTBOX_MAX = 500;

function initOutbox() {
  // (a refresh's answer never overwrites a later one, after Retry)
  const load = cappedList("outbox", "/api/outbox?state=dead", OUTBOX_MAX, (n, atMax) =>
    `Showing the newest ${n} items given up on${atMax ? " (the most this view lists)" : ""}.`, (body) => {
    const items = asList(body, "items");
    const counts = (body && body.counts) || {};
    const states = [...OUTBOX_STATES, ...Object.keys(counts).filter((s) => !OUTBOX_STATES.includes(s)).sort()];
    document.getElementById("outbox-counts").textContent =
      "Items by state: " + states.map((s) => `${s} ${counts[s] ?? 0}`).join(" · ");
    fillRows("#outbox-table", items.map((i) => `<tr data-id="${esc(i.id)}"><th scope="row">${esc(i.id)}</th>
      <td class="nowrap">${esc(i.issueKey)}</td><td><code>${esc(i.op)}</code> ${esc(i.stage || i.kind || "")}</td><td>${esc(i.attempts)}</td>
      <td>${esc(i.lastError)}</td><td>${when(i.createdAt)}</td><td class="muted">${esc(i.bodyPreview)}</td>
      <td><button type="button" data-act="retry" aria-label="Retry item ${esc(i.id)}">Retry</button></td></tr>`), 8, "No tracker write was given up on.");
    return items.length;
  });
  document.querySelector("#outbox-table").addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-act=retry]");
    if (!btn) return;
    const id = btn.closest("tr").dataset.id;
    const index = rowIndex(btn.closest("tr"));
    const ran = await oneAtATime(btn, async () => {
      try {
        await api("POST", `/api/outbox/${encodeURIComponent(id)}/retry`);
        flash(`Outbox item ${id} re-queued: the next poll cycle sends it`);
        await load();
      } catch (e) { flash(e.message, "error"); }
    });
    // (the item re-queued leaves the list of dead ones: the focus goes to the next one's Retry)
    if (ran) refocusRow("#outbox-table", (tr) => tr.dataset.id === id, ["retry"], index);
  });
}

/* ---- checks ----------------------------------------------------------------------------------- */

function initChecks() {
  const btn = document.getElementById("checks-run");
  const summary = document.getElementById("checks-summary");
  btn.addEventListener("click", () => oneAtATime(btn, async () => {
    summary.textContent = "Checking…";
    try {
      const body = await api("GET", "/api/checks");
      const rows = asList(body, "checks");
      fillRows("#checks-table", rows.map((c) => `<tr class="check-${esc(c.status)}"><th scope="row">${esc(c.status)}</th>
        <td class="nowrap">${esc(c.kind)} <code>${esc(c.provider)}</code></td><td>${esc(c.name)}</td>
        <td>${esc(c.detail)}</td></tr>`), 4, "Nothing to check.");
      summary.textContent = body.summary;
    } catch (e) { summary.textContent = ""; flash(e.message, "error"); }
  }));
}

/* ---- secrets ---------------------------------------------------------------------------------- */

function initSecrets() {
  const scope = document.getElementById("s-scope");
  const tbody = document.querySelector("#secrets-table tbody");
  const pathOf = (team) => team ? `/api/mappings/${encodeURIComponent(team)}/secrets` : "/api/global-secrets";
  const scopeName = (team) => team ? `team ${team}` : "global";
  const ticket = answerOrder();
  /* No runner backend that keeps secrets is set up (the API's 503 "Fly sessions config not set"):
     nothing can be set until one is, so the form says so instead of taking a value it must refuse. */
  const submit = document.querySelector("#secret-form button[type=submit]");
  const unavailable = (message) => {
    submit.disabled = !!message;
    submit.dataset.unavailable = message ? "1" : "";
    document.getElementById("secret-error").textContent = message
      ? `Secrets cannot be set here: ${message} (no installed runner backend keeps secrets, or its settings `
        + "are missing: aiimpl check says which)." : "";
  };
  /* The rows are those of the scope they were listed for (tbody.dataset.scope), which Delete acts
     on: the answer for a scope no longer selected is dropped (the Scope select changed while it was
     on its way), and so is one a later answer overtook. A list that cannot be read shows why in
     place of its rows: never another scope's rows, nor "Loading…". */
  const load = async () => {
    const listed = scope.value;
    const mayShow = ticket();
    let rows = null;
    let error = null;
    try { rows = asList(await api("GET", pathOf(listed)), "secrets", "items"); } catch (e) { error = e; }
    if (scope.value !== listed || !mayShow()) return;
    tbody.dataset.scope = listed;
    unavailable(error && error.status === 503 ? error.message : null);
    if (error) { fillRows("#secrets-table", [], 3, error.message); throw error; }
    fillRows("#secrets-table", rows.map((s) => `<tr data-name="${esc(s.name)}"><th scope="row"><code>${esc(s.name)}</code></th>
      <td>${when(pick(s, "updatedAt"))}</td><td><button type="button" class="danger" data-act="delete"
        aria-label="Delete secret ${esc(s.name)}">Delete</button></td></tr>`),
    3, "No secrets in this scope.");
  };
  api("GET", "/api/mappings").then((body) => {
    for (const m of asList(body, "mappings", "items")) {
      const opt = document.createElement("option");
      opt.value = m.teamKey; opt.textContent = `Team ${m.teamKey}`;
      scope.appendChild(opt);
    }
  }).catch((e) => flash(`Could not list the teams (only global secrets can be chosen): ${e.message}`, "error"));
  // (a store that is not set up is said beside the form and in the list already)
  const reload = () => load().catch((e) => { if (e.status !== 503) flash(e.message, "error"); });
  scope.addEventListener("change", () => {
    // the rows shown are the last scope's: none is offered for Delete until the new scope's come
    delete tbody.dataset.scope;
    fillRows("#secrets-table", [], 3, "Loading…");
    reload();
  });
  // a name the browser refuses (its pattern) is said by the browser: the last action's words go
  document.getElementById("secret-form").addEventListener("invalid", clearFlash, true);
  document.getElementById("secret-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const err = document.getElementById("secret-error");
    // a second click while the first is on its way sends nothing (the form is emptied after it)
    oneAtATime(submit, async () => {
      err.textContent = "";
      clearFlash();
      const name = form.name.value;
      try {
        await api("POST", pathOf(scope.value), {name, value: form.value.value});
        flash(`Secret ${name} set`);
        form.reset();
        await load();
      } catch (e) { err.textContent = e.message; }
    });
  });
  document.querySelector("#secrets-table").addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-act=delete]");
    const team = tbody.dataset.scope;
    if (!btn || team === undefined) return;
    const name = btn.closest("tr").dataset.name;
    const index = rowIndex(btn.closest("tr"));
    // a second click while the delete is on its way sends nothing (it was refused as deleted meanwhile)
    const ran = await oneAtATime(btn, async () => {
      if (!confirm(`Delete secret ${name} (${scopeName(team)})?`)) return;
      try { await api("DELETE", `${pathOf(team)}/${encodeURIComponent(name)}`); flash(`Secret ${name} deleted`); await load(); }
      catch (e) {
        // deleted meanwhile: said so, and the list read again
        const gone = e.status === 404 && e.message === "Secret not found";
        flash(gone ? `Secret ${name} no longer exists: it was deleted meanwhile.` : e.message, "error");
        if (e.status === 404) await load().catch(() => {});
      }
    });
    if (ran) refocusRow("#secrets-table", (tr) => tr.dataset.name === name, ["delete"], index,
      document.querySelector("#secret-form [name=name]"));
  });
  reload();
}

/* ---- runner mode, jira ---------------------------------------------------------------------- */

function initRunnerMode() {
  const form = document.getElementById("runner-mode-form");
  const warning = document.getElementById("runner-mode-warning");
  const load = async () => {
    const body = await api("GET", "/api/runner-mode");
    const mode = pick(body, "mode", "persisted");
    const input = form.querySelector(`input[value="${mode}"]`);
    if (input) input.checked = true;
    document.getElementById("runner-mode-effective").textContent = pick(body, "effective", "mode");
    const env = pick(body, "envOverride");
    // the override, and a mode whose backend is not installed (saved or in force: its issues wait)
    const said = (env ? [`RUNNER_MODE env var is set (${env}); the saved value has no effect until it is unset.`] : [])
      .concat(asList(body && body.warnings));
    warning.hidden = !said.length;
    warning.textContent = said.join(" ");
  };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const mode = form.querySelector("input[name=mode]:checked");
    if (!mode) return;
    try {
      const body = await api("POST", "/api/runner-mode", {mode: mode.value});
      const warnings = asList(body && body.warnings);
      // saved, but its issues will wait: said as an error is, so it is not missed
      flash(warnings.length ? `Runner mode set to ${mode.value}. Warning: ${warnings.join(" ")}`
        : `Runner mode set to ${mode.value}`, warnings.length ? "error" : "ok");
    }
    catch (e) {
      if (e.status === 409) { warning.hidden = false; warning.textContent = e.message; }
      else flash(e.message, "error");
    }
    await load().catch(() => {});
  });
  load().catch((e) => flash(e.message, "error"));
}

function initJira() {
  const form = document.getElementById("jql-form");
  const result = document.getElementById("jql-result");
  /* The result is that of the clause in the field: one typed since has none yet (the last one's
     "Valid JQL" read as this one's), and an answer for another clause, or one a later answer
     overtook, is dropped. Jira's warnings (a value no issue has, a field it does not know) are
     said with a valid clause: it matches nothing it was meant to. */
  const checked = answerOrder();
  const say = (kind, text) => { result.className = kind; result.textContent = text; };
  form.jql.addEventListener("input", () => say("", ""));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const jql = form.jql.value;
    const mayShow = checked();
    say("", "Checking…");
    let kind;
    let text;
    try {
      const body = await api("POST", "/api/jira/validate-jql", {jql});
      const warnings = asList(body && body.warnings);
      if (body && body.valid === false) [kind, text] = ["error", "Invalid"];
      else if (warnings.length) [kind, text] = ["warning", `Valid JQL, but Jira warns: ${warnings.join(" ")}`];
      else [kind, text] = ["ok", "Valid JQL"];
    } catch (e) { [kind, text] = ["error", e.message]; }
    if (form.jql.value === jql && mayShow()) say(kind, text);
  });
  const fieldSel = document.getElementById("jira-field");
  const optSel = document.getElementById("jira-option");
  api("GET", "/api/jira/fields").then((body) => {
    const fields = asList(body, "fields", "items");
    fieldSel.innerHTML = '<option value="">Choose a field</option>' +
      fields.map((f) => `<option value="${esc(f.id)}">${esc(f.name)} (${esc(f.id)})</option>`).join("");
  }).catch((e) => { fieldSel.innerHTML = `<option value="">${esc(e.message)}</option>`; });
  // the options shown are those of the field selected: an answer for another one (the field was
  // changed while it was on its way) is dropped, as is one a later answer overtook
  const ticket = answerOrder();
  fieldSel.addEventListener("change", async () => {
    const field = fieldSel.value;
    const mayShow = ticket();
    optSel.innerHTML = `<option value="">${field ? "Loading…" : "Choose a field first"}</option>`;
    if (!field) return;
    let html;
    try {
      const opts = asList(await api("GET", `/api/jira/field-options?fieldId=${encodeURIComponent(field)}`), "options", "items");
      html = opts.length ? opts.map((o) => `<option value="${esc(o.id ?? o.value)}">${esc(o.value ?? o.name)}</option>`).join("")
        : '<option value="">This field has no options</option>';
    } catch (e) { html = `<option value="">${esc(e.message)}</option>`; }
    if (fieldSel.value === field && mayShow()) optSel.innerHTML = html;
  });
}

/* ---- boot ------------------------------------------------------------------------------------ */

const PANELS = {projects: initProjects, issues: initIssues, blockers: initBlockers, jobs: initJobs,
  outbox: initOutbox, checks: initChecks, sessions: initSessions, secrets: initSecrets, "runner-mode": initRunnerMode, jira: initJira};

/* Submit buttons are served disabled and enabled here, once their forms' handlers are attached: a
   form submitted before that would go out natively, and none of them is meant to (a secret or a
   password in a URL). Their method is POST all the same. */
function enableForms() {
  document.querySelectorAll('form button[type="submit"][disabled]').forEach((b) => {
    if (!b.dataset.unavailable) b.disabled = false;
  });
}

/* Sign-out ends the session on the server, for every copy of its token; only then is it dropped
   here. A server that cannot be reached, or leaves it unanswered for ANSWER_MS (see api), leaves the
   session open here, and says so (the button busy meanwhile, taking no second click): a sign-out
   whose answer was lost ended it on the server all the same, which the next try finds (401). */
async function signOut(event) {
  await oneAtATime(event.currentTarget, async () => {
    try {
      await api("DELETE", "/api/auth");
    } catch (e) {
      if (e.status !== 401) {
        const why = e.status ? `the server answered ${e.status}` : e.message.charAt(0).toLowerCase() + e.message.slice(1);
        flash(`Not signed out: ${why}. Try again.`, "error");
        return;
      }
    }
    sessionStorage.removeItem(TOKEN_KEY);
    // what was typed goes with the session: none is kept for whoever signs in next in this tab
    draftsKept = true;
    Object.keys(sessionStorage).filter((k) => k.startsWith("aiimpl.draft:"))
      .forEach((k) => sessionStorage.removeItem(k));
    location.assign("/ui/signin");
  });
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.getElementById("signin-form")) { initSignin(); enableForms(); return; }
  if (!token()) { location.assign(`/ui/signin?next=${encodeURIComponent(location.pathname)}`); return; }
  const out = document.getElementById("signout");
  if (out) out.addEventListener("click", signOut);
  const init = PANELS[document.body.dataset.panel];
  if (init) init();
  sayUndone();
  // a reload, Back or another panel: what was typed in a form is put back when the page is again
  window.addEventListener("pagehide", () => keepDrafts("left"));
  enableForms();
});
