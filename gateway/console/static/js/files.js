// Files: every audio the caller may see, live through the event stream; uploads by drag and drop.

import { allows, api, events, STATES, upload } from "./api.js";
import { announce, badge, clock, el, showError, startPage, when } from "./ui.js";

const PAGE_SIZE = 100;
// State changes are gathered for a moment: a few rows are read one by one, a flood
// (a folder of files arriving) with one read of the list.
const GATHER_MS = 250;
const ROWS_READ_ONE_BY_ONE = 8;
const changed = new Set();
let gathering = null;
const rows = new Map(); // audio id -> row of GET /v1/audio
let stateFilter = "";
let textFilter = "";
let body = null;
let more = null; // the "Show more" button
let nextCursor = null;

function progressCell(row) {
  if (row.state === "processing" && typeof row.progress === "number") {
    const percent = Math.round(row.progress * 100);
    return el(
      "td",
      { class: "progress" },
      el("progress", { max: 100, value: percent, "aria-label": `${row.original_name} progress` }),
      el("span", { class: "muted" }, ` ${percent}%`),
    );
  }
  if (row.state === "transcribed") return el("td", { class: "progress" }, "100%");
  return el("td", { class: "progress muted" }, "–");
}

function verdictCell(row) {
  if (!row.verdict) return el("td", { class: "muted" }, "–");
  const reasons = (row.review_reasons || []).join(", ");
  return el("td", { title: reasons || undefined }, badge(row.verdict));
}

function stateCell(row) {
  const cell = el("td", { class: "state" }, badge(row.state));
  if (row.error) cell.append(el("div", { class: "reason" }, row.error));
  return cell;
}

function rowElement(row) {
  return el(
    "tr",
    { "data-id": row.id, "data-state": row.state },
    el(
      "th",
      { scope: "row" },
      el("a", { href: `/console/audio/${row.id}` }, row.original_name),
    ),
    stateCell(row),
    progressCell(row),
    el("td", { class: "num" }, clock(row.duration_s)),
    el("td", {}, row.language || "–"),
    verdictCell(row),
    el("td", {}, row.source),
    el("td", {}, when(row.created_at)),
  );
}

function visible(row) {
  if (stateFilter && row.state !== stateFilter) return false;
  if (!textFilter) return true;
  const needle = textFilter.toLowerCase();
  return row.original_name.toLowerCase().includes(needle) || row.id.startsWith(needle);
}

function render() {
  const shown = [...rows.values()]
    .filter(visible)
    .sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  if (!shown.length) {
    body.replaceChildren(
      el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No files match."))
    );
    return;
  }
  body.replaceChildren(...shown.map(rowElement));
}

// Keep the newer of two copies of a row: a list read may answer after an event's refresh.
function upsert(row) {
  const known = rows.get(row.id);
  if (!known || known.updated_at <= row.updated_at) rows.set(row.id, row);
}

// The newest page (again, after a filter change), or with `cursor` the next older one.
async function load(cursor = null) {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (stateFilter) query.set("state", stateFilter);
  if (cursor) query.set("cursor", cursor);
  const page = await api(`/v1/audio?${query}`);
  if (!cursor) {
    for (const id of [...rows.keys()]) {
      if (stateFilter && rows.get(id).state !== stateFilter) rows.delete(id);
    }
  }
  for (const row of page.items) upsert(row);
  nextCursor = page.next_cursor;
  more.hidden = !nextCursor;
  render();
}

async function refresh(id) {
  try {
    const row = await api(`/v1/audio/${id}`);
    const before = rows.get(id);
    upsert(row);
    render();
    if (!before || before.state !== row.state) announce(`${row.original_name}: ${row.state}`);
  } catch (error) {
    if (error.status === 404) rows.delete(id);
  }
}

function onEvent(type, data) {
  if (type === "audio.progress") {
    const row = rows.get(data.audio_id);
    if (row) {
      row.progress = data.progress;
      row.state = "processing";
      render();
    }
    return;
  }
  changed.add(data.audio_id);
  gathering ??= window.setTimeout(readChanged, GATHER_MS);
}

async function readChanged() {
  const ids = [...changed];
  changed.clear();
  gathering = null;
  if (ids.length > ROWS_READ_ONE_BY_ONE) {
    await load().catch((error) => showError(body, error));
    return;
  }
  await Promise.all(ids.map(refresh));
}

function uploadItem(file, list) {
  const bar = el("progress", { max: 100, value: 0, "aria-label": `Uploading ${file.name}` });
  const status = el("span", { class: "status" }, "uploading…");
  const item = el("li", { class: "upload", "data-name": file.name }, el("span", { class: "name" }, file.name), bar, status);
  list.prepend(item);
  upload(file, (fraction) => {
    bar.value = Math.round(fraction * 100);
  }).then(
    (answer) => {
      bar.value = 100;
      item.dataset.outcome = answer.outcome;
      const link = el("a", { href: `/console/audio/${answer.id}` }, answer.id.slice(0, 8));
      status.replaceChildren(
        answer.outcome === "duplicate" ? "already here as " : "accepted as ",
        answer.outcome === "duplicate" && answer.duplicate_of
          ? el("a", { href: `/console/audio/${answer.duplicate_of}` }, answer.duplicate_of.slice(0, 8))
          : link,
      );
      announce(`${file.name} ${answer.outcome}`);
      refresh(answer.id);
    },
    (error) => {
      item.dataset.outcome = "rejected";
      item.classList.add("rejected");
      status.replaceChildren(el("strong", {}, "rejected: "), error.message);
      announce(`${file.name} rejected: ${error.message}`);
    },
  );
}

function uploader() {
  const list = el("ul", { class: "uploads", "aria-label": "Uploads" });
  const input = el("input", {
    type: "file",
    id: "file-input",
    multiple: true,
    accept: "audio/*,video/*",
    class: "visually-hidden",
  });
  const send = (files) => [...files].forEach((file) => uploadItem(file, list));
  input.addEventListener("change", () => {
    send(input.files);
    input.value = "";
  });
  const zone = el(
    "div",
    { class: "dropzone", id: "dropzone", "data-testid": "dropzone" },
    el("p", {}, "Drop audio files here, or "),
    input,
    el("label", { for: "file-input", class: "button" }, "choose files"),
  );
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    send(event.dataTransfer.files);
  });
  return el("section", { "aria-labelledby": "upload-title" }, el("h2", { id: "upload-title" }, "Upload"), zone, list);
}

function filters() {
  const select = el(
    "select",
    { id: "state-filter", name: "state" },
    el("option", { value: "" }, "all"),
    STATES.map((state) => el("option", { value: state }, state)),
  );
  select.addEventListener("change", async () => {
    stateFilter = select.value;
    await load();
  });
  const search = el("input", { type: "search", id: "name-filter", name: "q", placeholder: "name or id" });
  search.addEventListener("input", () => {
    textFilter = search.value.trim();
    render();
  });
  return el(
    "div",
    { class: "filters", role: "search" },
    el("label", { for: "state-filter" }, "State"),
    select,
    el("label", { for: "name-filter" }, "Find"),
    search,
  );
}

async function start(main) {
  body = el("tbody", {});
  const table = el(
    "table",
    { class: "files", "aria-describedby": "files-title" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        ["Name", "State", "Progress", "Duration", "Language", "Verdict", "Source", "Added"].map((h) =>
          el("th", { scope: "col" }, h),
        ),
      ),
    ),
    body,
  );
  more = el("button", { type: "button", class: "secondary", hidden: true }, "Show more");
  more.addEventListener("click", () => load(nextCursor).catch((error) => showError(body, error)));
  const parts = [
    el("h1", { id: "files-title" }, "Files"),
    allows("audio:write") ? uploader() : null, // reading tokens see the list only
    el("section", { "aria-label": "Files" }, filters(), el("div", { class: "scroll" }, table), more),
  ];
  main.replaceChildren(...parts.filter(Boolean));
  const live = el("p", { class: "error", role: "alert", hidden: true }, "Live updates stopped (signed out?): reload the page.");
  main.append(live);
  events("", onEvent, () => {
    live.hidden = false;
  });
  try {
    await load();
  } catch (error) {
    showError(body, error);
  }
}

startPage("files", start);
