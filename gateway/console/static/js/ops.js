// Operations (admin): queue, workers, dead jobs with retry, disk floors, datasets,
// training runs and models, refreshed every few seconds.

import { api } from "./api.js";
import { announce, badge, bytes, clock, el, startPage, when } from "./ui.js";

const REFRESH_MS = 5000;

function table(caption, headers, rows, empty = "None.") {
  if (!rows.length) return el("p", { class: "muted" }, empty);
  return el(
    "div",
    { class: "scroll" },
    el(
      "table",
      {},
      el("caption", { class: "visually-hidden" }, caption),
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c ?? "–"))))),
    ),
  );
}

function counts(title, values) {
  const entries = Object.entries(values || {});
  return el(
    "div",
    { class: "counts" },
    el("h3", {}, title),
    entries.length
      ? el("dl", {}, entries.map(([k, v]) => [el("dt", {}, k), el("dd", { "data-count": k }, String(v))]))
      : el("p", { class: "muted" }, "none"),
  );
}

async function queue() {
  const stats = await api("/v1/stats");
  return [
    el(
      "p",
      { class: "headline" },
      el("strong", { "data-testid": "queue-depth" }, String(stats.queue_depth)),
      " in the queue · ",
      `${hours(stats.hours_transcribed)} transcribed · `,
      `real-time factor ${stats.average_real_time_factor == null ? "–" : stats.average_real_time_factor.toFixed(3)}`,
    ),
    el(
      "div",
      { class: "count-grid" },
      counts("Jobs by state", stats.jobs_by_state),
      counts("Audio by state", stats.audio_by_state),
      counts("Transcripts by verdict", stats.transcripts_by_verdict),
    ),
  ];
}

function gpu(worker) {
  if (worker.gpu_memory_total_bytes == null) return "–";
  return `${bytes(worker.gpu_memory_used_bytes)} / ${bytes(worker.gpu_memory_total_bytes)}`;
}

async function workers() {
  const answer = await api("/v1/workers");
  return table(
    "Workers",
    ["Worker", "Alive", "Device", "Model", "Batch", "Current job", "GPU memory", "Done", "Failed", "Last seen"],
    answer.items.map((w) => [
      w.worker_id,
      badge(w.alive ? "alive" : "gone"),
      `${w.device} ${w.compute_type || ""}`.trim(),
      w.model,
      w.batch_size,
      w.current_job_id ?? "idle",
      gpu(w),
      w.jobs_done,
      w.jobs_failed,
      when(w.last_seen_at),
    ]),
    "No worker has reported yet.",
  );
}

function retryButton(job, refresh) {
  const button = el("button", { type: "button", class: "small" }, "Retry");
  button.setAttribute("aria-label", `Retry job ${job.id}`);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api(`/v1/jobs/${job.id}/retry`, { method: "POST" });
      announce(`Job ${job.id} queued again`);
      await refresh();
    } catch (error) {
      button.disabled = false;
      button.after(el("span", { class: "error", role: "alert" }, ` ${error.message}`));
    }
  });
  return button;
}

async function deadJobs(refresh) {
  const [dead, failed] = await Promise.all([
    api("/v1/jobs?state=dead&limit=100"),
    api("/v1/jobs?state=failed&limit=100"),
  ]);
  const jobs = [...dead.items, ...failed.items];
  return table(
    "Dead and failed jobs",
    ["Job", "Audio", "State", "Attempts", "Error", ""],
    jobs.map((job) => [
      String(job.id),
      el("a", { href: `/console/audio/${job.audio_id}` }, job.audio_id.slice(0, 8)),
      badge(job.state),
      `${job.attempts} / ${job.max_attempts}`,
      el("span", { class: "reason" }, job.last_error || "–"),
      retryButton(job, refresh),
    ]),
    "No dead or failed jobs.",
  );
}

async function disk() {
  const answer = await api("/v1/disk");
  return table(
    "Disk floors",
    ["Disk", "Free", "Floor", "State", "Below the floor"],
    answer.items.map((d) => [
      el("span", { title: d.path }, d.name),
      d.free_bytes == null ? "–" : `${bytes(d.free_bytes)} of ${bytes(d.total_bytes)}`,
      bytes(d.floor_bytes),
      badge(d.below_floor ? "low" : "ok"),
      d.effect,
    ]),
  );
}

// Hours as a person reads them: minutes below one hour.
function hours(value) {
  if (value === null || value === undefined) return "–";
  return value >= 1 ? `${value.toFixed(1)} h` : `${(value * 60).toFixed(1)} min`;
}

function hoursBy(groups) {
  const entries = Object.entries(groups || {});
  if (!entries.length) return "–";
  return entries.map(([k, v]) => `${k} ${hours(v.hours ?? 0)}`).join(", ");
}

async function datasets() {
  const answer = await api("/v1/datasets");
  return table(
    "Dataset versions",
    ["Dataset", "Tenant", "Version", "State", "Audio", "By split", "By language", "Frozen"],
    answer.items.map((v) => [
      v.name,
      v.tenant,
      String(v.version),
      badge(v.state),
      hours(v.audio_hours),
      hoursBy(v.stats?.splits),
      hoursBy(v.stats?.languages),
      when(v.frozen_at),
    ]),
    "No dataset version yet.",
  );
}

async function runs() {
  const answer = await api("/v1/training-runs");
  return table(
    "Training runs",
    ["Run", "Tenant", "Dataset", "State", "Launcher", "Started", "Finished", "Error"],
    answer.items.map((r) => [
      String(r.id),
      r.tenant,
      `${r.dataset} v${r.version}`,
      badge(r.state),
      r.launcher,
      when(r.started_at),
      when(r.finished_at),
      r.error || (r.exit_code != null ? `exit ${r.exit_code}` : "–"),
    ]),
    "No training run yet.",
  );
}

async function models() {
  let answer;
  try {
    answer = await api("/v1/models/registry");
  } catch (error) {
    if (error.status === 404 || error.status === 405) {
      return el("p", { class: "muted" }, "This server has no model registry.");
    }
    throw error;
  }
  const wer = (m, who) => {
    const value = m.metrics?.wer?.[who]?.test;
    return typeof value === "number" ? value.toFixed(3) : "–";
  };
  return table(
    "Models",
    ["Model", "State", "Tenant", "Base", "Dataset", "Test WER (current → this)", "Decision", "Created"],
    answer.items.map((m) => [
      m.name,
      badge(m.state),
      m.tenant || "all",
      m.base_model,
      m.dataset_version_id != null ? String(m.dataset_version_id) : "–",
      `${wer(m, "current")} → ${wer(m, "candidate")}`,
      el("span", { class: "reason" }, m.decision || "–"),
      when(m.created_at),
    ]),
    "No trained model yet.",
  );
}

function section(id, title) {
  const body = el("div", { class: "section-body" }, el("p", { class: "muted" }, "Loading…"));
  const node = el("section", { id, "aria-labelledby": `${id}-title`, class: "card" }, el("h2", { id: `${id}-title` }, title), body);
  return { node, body };
}

async function start(main) {
  const parts = {
    queue: [section("queue", "Queue"), queue],
    workers: [section("workers", "Workers"), workers],
    jobs: [section("dead-jobs", "Dead and failed jobs"), null],
    disk: [section("disk", "Disk"), disk],
    datasets: [section("datasets", "Dataset versions"), datasets],
    runs: [section("runs", "Training runs"), runs],
    models: [section("models", "Models"), models],
  };
  const refresh = async ({ timed = false } = {}) => {
    await Promise.all(
      Object.values(parts).map(async ([part, load]) => {
        // Leave alone a section the keyboard is in: its buttons would vanish under it.
        if (timed && part.node.contains(document.activeElement)) return;
        try {
          const content = await load();
          part.body.replaceChildren(...[content].flat());
        } catch (error) {
          part.body.replaceChildren(el("p", { class: "error" }, error.message));
        }
      }),
    );
  };
  parts.jobs[1] = () => deadJobs(refresh);
  main.replaceChildren(el("h1", {}, "Operations"), ...Object.values(parts).map(([part]) => part.node));
  await refresh();
  window.setInterval(() => {
    if (!document.hidden) refresh({ timed: true });
  }, REFRESH_MS);
}

startPage("ops", start, { scope: "admin" });
