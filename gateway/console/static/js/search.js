// Full-text search over transcripts; each hit opens its transcript at that moment.

import { api } from "./api.js";
import { clock, el, showError, startPage } from "./ui.js";

// The server marks matches with <mark>…</mark> around plain segment text: build the
// nodes from the pieces, never as HTML, so nothing in a transcript can become markup.
export function snippetNodes(snippet) {
  const nodes = [];
  const parts = snippet.split(/(<mark>|<\/mark>)/);
  let marked = false;
  for (const part of parts) {
    if (part === "<mark>") marked = true;
    else if (part === "</mark>") marked = false;
    else if (part) nodes.push(marked ? el("mark", {}, part) : document.createTextNode(part));
  }
  return nodes;
}

function hitItem(hit) {
  const href = `/console/audio/${hit.audio_id}?t=${hit.start_s}&segment=${hit.segment}`;
  return el(
    "li",
    { class: "hit" },
    el(
      "a",
      { href },
      el("span", { class: "name" }, hit.original_name),
      el("span", { class: "time" }, ` at ${clock(hit.start_s)}`),
    ),
    el("p", { class: "snippet" }, snippetNodes(hit.snippet)),
  );
}

async function run(query, results) {
  if (!query) {
    results.replaceChildren();
    return;
  }
  results.replaceChildren(el("p", { class: "muted" }, "Searching…"));
  try {
    const answer = await api(`/v1/search?${new URLSearchParams({ q: query, limit: "50" })}`);
    if (!answer.items.length) {
      results.replaceChildren(el("p", { role: "status" }, `Nothing says “${query}”.`));
      return;
    }
    results.replaceChildren(
      el("p", { role: "status" }, `${answer.items.length} match${answer.items.length === 1 ? "" : "es"}`),
      el("ol", { class: "hits" }, answer.items.map(hitItem)),
    );
  } catch (error) {
    showError(results, error);
  }
}

async function start(main) {
  const params = new URLSearchParams(window.location.search);
  const input = el("input", {
    type: "search",
    id: "q",
    name: "q",
    required: true,
    maxlength: 500,
    value: params.get("q") || "",
  });
  const results = el("div", { class: "results", "aria-live": "polite" });
  const form = el(
    "form",
    { role: "search", class: "search-form", action: "/console/search" },
    el("label", { for: "q" }, "Words to find"),
    input,
    el("button", { type: "submit" }, "Search"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = input.value.trim();
    window.history.replaceState(null, "", `?${new URLSearchParams({ q: query })}`);
    run(query, results);
  });
  main.replaceChildren(el("h1", {}, "Search"), form, results);
  input.focus();
  await run(input.value.trim(), results);
}

startPage("search", start);
