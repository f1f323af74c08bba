// One audio: the player beside its transcript; the segment playing is highlighted,
// a click on a segment seeks to it; downloads in every format; corrections where allowed.

import { allows, api, events } from "./api.js";
import { announce, badge, clock, el, showError, startPage, when } from "./ui.js";

const FORMATS = ["txt", "srt", "vtt", "json"];
const audioId = decodeURIComponent(window.location.pathname.split("/").filter(Boolean).pop());

let transcript = null;
let segmentNodes = [];
let currentIdx = -1;
let player = null;
let audioRow = null;
let detailsNode = null;

function startTime() {
  const params = new URLSearchParams(window.location.search);
  const hash = new URLSearchParams(window.location.hash.slice(1));
  const t = parseFloat(params.get("t") ?? hash.get("t") ?? "");
  return Number.isFinite(t) && t >= 0 ? t : null;
}

function segmentAt(seconds) {
  const segments = transcript.segments;
  for (let i = segments.length - 1; i >= 0; i -= 1) {
    if (segments[i].start_s <= seconds + 0.01) {
      return seconds < segments[i].end_s + 0.25 || i === segments.length - 1 ? i : -1;
    }
  }
  return -1;
}

function highlight(index, { focus = false } = {}) {
  if (index === currentIdx && !focus) return;
  const before = segmentNodes[currentIdx];
  if (before) {
    before.classList.remove("current");
    before.removeAttribute("aria-current");
  }
  currentIdx = index;
  const node = segmentNodes[index];
  if (!node) return;
  node.classList.add("current");
  node.setAttribute("aria-current", "true");
  node.scrollIntoView({ block: "nearest" });
  if (focus) node.querySelector("button")?.focus({ preventScroll: true });
}

function seek(seconds, { play = true } = {}) {
  player.currentTime = seconds;
  highlight(segmentAt(seconds));
  if (play) player.play().catch(() => {});
}

function segmentItem(segment, index) {
  const button = el(
    "button",
    {
      type: "button",
      class: "seek",
      "aria-label": `Play from ${clock(segment.start_s)}: ${segment.text}`,
      onclick: () => seek(segment.start_s),
    },
    el("span", { class: "time" }, clock(segment.start_s)),
    el("span", { class: "text" }, segment.text.trim()),
  );
  return el(
    "li",
    { class: "segment", id: `segment-${segment.idx}`, "data-idx": segment.idx, "data-index": index },
    button,
  );
}

function details(audio) {
  const figures = transcript.figures || {};
  const language = transcript.language
    ? `${transcript.language}${transcript.language_probability ? ` (${Math.round(transcript.language_probability * 100)}%)` : ""}`
    : "–";
  const reasons = (transcript.review_reasons || []).join(", ");
  const items = [
    ["State", badge(audio.state)],
    ["Duration", clock(audio.duration_s)],
    ["Language", language],
    ["Verdict", el("span", {}, badge(transcript.verdict || "–", transcript.verdict || "none"), reasons ? ` ${reasons}` : "")],
    ["Model", transcript.model || "–"],
    ["Coverage", figures.coverage != null ? `${Math.round(figures.coverage * 100)}%` : "–"],
    ["Source", audio.source],
    ["Added", when(audio.created_at)],
  ];
  if (transcript.revision != null) items.push(["Revision", String(transcript.revision)]);
  if (transcript.verified_by) items.push(["Corrected by", `${transcript.verified_by} ${when(transcript.verified_at)}`]);
  return el("dl", { class: "details" }, items.map(([k, v]) => [el("dt", {}, k), el("dd", { "data-field": k.toLowerCase() }, v)]));
}

function downloads() {
  return el(
    "nav",
    { "aria-label": "Downloads", class: "downloads" },
    el("h2", {}, "Download"),
    el(
      "ul",
      {},
      FORMATS.map((format) =>
        el(
          "li",
          {},
          el(
            "a",
            { href: `/v1/audio/${audioId}/transcript?format=${format}`, download: `${audioId}.${format}` },
            format.toUpperCase(),
          ),
        ),
      ),
    ),
  );
}

async function canCorrect() {
  if (!allows("transcripts:write")) return false;
  try {
    const schema = await api("/openapi.json");
    return Boolean(schema.paths?.["/v1/audio/{audio_id}/transcript"]?.put);
  } catch {
    return false;
  }
}

function showDetails() {
  const fresh = details(audioRow);
  detailsNode.replaceWith(fresh);
  detailsNode = fresh;
}

function editor(list, status) {
  const editing = el("button", { type: "button", class: "secondary" }, "Edit text");
  const save = el("button", { type: "button", hidden: true }, "Save correction");
  const cancel = el("button", { type: "button", class: "secondary", hidden: true }, "Cancel");
  const fields = [];
  // What was spoken, where the model guessed wrong: the corrected transcript is
  // training data filed under its language.
  const languageField = el("input", {
    id: "edit-language",
    name: "language",
    size: 4,
    maxlength: 3,
    pattern: "[a-z]{2,3}",
    autocomplete: "off",
    "aria-describedby": "edit-language-help",
  });
  const languageLabel = el(
    "label",
    { class: "language", hidden: true },
    "Spoken language ",
    languageField,
    el("small", { id: "edit-language-help" }, " code such as en, de, vi"),
  );
  editing.addEventListener("click", () => {
    fields.length = 0;
    languageField.value = transcript.language || "";
    languageLabel.hidden = false;
    transcript.segments.forEach((segment, index) => {
      const id = `edit-${segment.idx}`;
      const area = el("textarea", { id, rows: 2, "data-idx": segment.idx }, segment.text.trim());
      fields.push(area);
      segmentNodes[index].replaceChildren(
        el("label", { for: id, class: "time" }, clock(segment.start_s)),
        area,
      );
    });
    editing.hidden = true;
    save.hidden = false;
    cancel.hidden = false;
    fields[0]?.focus();
  });
  const done = () => {
    segmentNodes = transcript.segments.map(segmentItem);
    list.replaceChildren(...segmentNodes);
    currentIdx = -1;
    editing.hidden = false;
    save.hidden = true;
    cancel.hidden = true;
    languageLabel.hidden = true;
  };
  cancel.addEventListener("click", done);
  save.addEventListener("click", async () => {
    const segments = transcript.segments.map((segment, index) => ({
      idx: segment.idx,
      start: segment.start_s,
      end: segment.end_s,
      text: fields[index].value.trim(),
    }));
    const body = { segments };
    if (transcript.revision != null) body.base_revision = transcript.revision;
    const spoken = languageField.value.trim().toLowerCase();
    if (spoken && spoken !== transcript.language) body.language = spoken;
    save.disabled = true;
    try {
      await api(`/v1/audio/${audioId}/transcript`, { method: "PUT", body });
      transcript = await api(`/v1/audio/${audioId}/transcript`);
      showDetails();
      status.textContent = `Correction saved as revision ${transcript.revision}.`;
      announce("Correction saved");
      done();
    } catch (error) {
      status.textContent = `Not saved: ${error.message}`;
    } finally {
      save.disabled = false;
    }
  });
  return el("div", { class: "toolbar" }, editing, languageLabel, save, cancel);
}

async function showTranscript(main, audio) {
  const list = el("ol", { class: "segments", id: "segments", "aria-label": "Transcript segments" });
  segmentNodes = transcript.segments.map(segmentItem);
  list.replaceChildren(...segmentNodes);
  player = el("audio", { controls: true, preload: "metadata", id: "player" });
  const status = el("p", { class: "status", role: "status" });
  audioRow = audio;
  detailsNode = details(audio);
  const side = el(
    "section",
    { class: "player-panel", "aria-label": "Player and details" },
    player,
    detailsNode,
    downloads(),
  );
  const text = el(
    "section",
    { class: "transcript-panel", "aria-labelledby": "transcript-title" },
    el("h2", { id: "transcript-title" }, "Transcript"),
    status,
    list,
  );
  main.replaceChildren(
    el("h1", {}, audio.original_name),
    el("div", { class: "transcript-layout" }, side, text),
  );
  if (await canCorrect()) text.insertBefore(editor(list, status), list);
  player.addEventListener("timeupdate", () => highlight(segmentAt(player.currentTime)));
  player.addEventListener("seeked", () => highlight(segmentAt(player.currentTime)));
  const at = startTime();
  if (at !== null) {
    const wanted = Number(new URLSearchParams(window.location.search).get("segment"));
    const exact = transcript.segments.findIndex((s) => s.idx === wanted);
    highlight(exact >= 0 ? exact : segmentAt(at), { focus: true });
    player.addEventListener("loadedmetadata", () => { player.currentTime = at; }, { once: true });
  }
  player.addEventListener("error", () => {
    status.textContent = "The audio could not be played.";
  });
  player.src = `/v1/audio/${audioId}/content`;
}

async function start(main) {
  let audio;
  try {
    audio = await api(`/v1/audio/${audioId}`);
  } catch (error) {
    if (error.status === 404) {
      main.replaceChildren(el("h1", {}, "Not found"), el("p", { role: "alert" }, "There is no such audio, or it is not yours to see."));
      return;
    }
    showError(main, error);
    return;
  }
  try {
    transcript = await api(`/v1/audio/${audioId}/transcript`);
  } catch (error) {
    if (error.status !== 409) {
      showError(main, error);
      return;
    }
    if (!["queued", "processing"].includes(audio.state)) {
      main.replaceChildren(
        el("h1", {}, audio.original_name),
        el("p", { role: "alert" }, `No transcript: the audio is ${audio.state}.`),
        el("p", { class: "reason" }, audio.error || ""),
      );
      return;
    }
    main.replaceChildren(
      el("h1", {}, audio.original_name),
      el("p", { role: "status", class: "status" }, error.message, " — this page updates when it is done."),
    );
    let stopped = false;
    const again = () => {
      if (stopped) return;
      stopped = true;
      stop();
      start(main);
    };
    const stop = events(`audio_id=${audioId}`, (type) => {
      if (type === "audio.transcribed" || type === "audio.failed" || type === "audio.duplicate") again();
    });
    // Done between the first look and the subscription: nothing more will come, look again.
    api(`/v1/audio/${audioId}`).then((now) => {
      if (!["queued", "processing"].includes(now.state)) again();
    }, () => {});
    return;
  }
  await showTranscript(main, audio);
}

startPage("audio", start);
