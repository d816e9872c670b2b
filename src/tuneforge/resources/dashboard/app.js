// tuneforge dashboard: plain ES module, no build step, no external resources.
//
// Routes (hash based): #/ jobs, #/new new-job form, #/jobs/<task_id> job page,
// #/models, #/playground (optionally #/playground?model=<id> to preselect a model).
//
// Stable element ids / selectors (used by the browser tests):
//   navigation     #nav-jobs #nav-new #nav-models #nav-playground (active link has .active)
//   auth           #token-dialog (shown on 401) #token-form #token-input #token-save #token-message
//                  token kept in localStorage "tuneforge-token", sent as "Authorization: Bearer <token>"
//   job list       #job-list #status-filter #jobs-table #jobs-body #jobs-empty #jobs-total #jobs-error
//                  row tr[data-task-id="<id>"][data-status][data-state]; cells .task-id (link) .status
//                  .progress (.bar, .progress-text "NN%") .loss .base-model .created; polled every 1 s
//   new job        #new-job-page #new-job-form, inputs [name=base_model|dataset_path|output_dir|num_epochs|
//                  batch_size|learning_rate|dataset_format(select)|max_steps|save_steps|logging_steps],
//                  #start-job, #form-error (server "detail"); success navigates to #/jobs/<task_id>
//   job page       #job-page #job-id #job-status[data-state] #job-progress (.progress-text) #job-step
//                  #job-loss #job-eta #job-details #job-error (task.error) #job-action-error
//                  (failed requests) #job-model (#job-model-link to the playground)
//                  canvas#loss-chart[data-points="<n loss points>"][data-eval-points="<n>"]
//                  ul#job-events > li[data-event="pipeline|status"] (newest last)
//                  pre#job-log (log tail, refreshed every 2 s), #stop-job #resume-job #delete-job
//   models         #models-page #models-list #served-list #services-list #datasets-list
//   playground     #playground #pg-model (select) #pg-model-custom #pg-max-tokens (default 32)
//                  #pg-temperature #pg-input #pg-send #pg-clear #pg-messages > .msg.user / .msg.assistant / .msg.error

const TOKEN_KEY = "tuneforge-token";
const ACTIVE_STATES = new Set(["queued", "running", "stopping"]);
const RESUMABLE_STATES = new Set(["stopped", "interrupted", "failed"]);
const TERMINAL_STATES = new Set(["completed", "failed", "stopped", "cancelled", "interrupted"]);

const app = document.getElementById("app");
let pageCleanups = [];

// ---------------------------------------------------------------- helpers

/** Create an element; attrs go to properties/attributes, children are nodes or text (never HTML). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const $ = (selector, root = document) => root.querySelector(selector);

function setText(selector, text, root = document) {
  const el = $(selector, root);
  if (el) el.textContent = text;
}

const isNum = (value) => value !== null && value !== undefined && value !== "" && Number.isFinite(Number(value));

function fmtNumber(value, digits = 4) {
  return isNum(value) ? String(Number(Number(value).toPrecision(digits))) : "–";
}

function fmtTime(unixSeconds) {
  return unixSeconds ? new Date(unixSeconds * 1000).toLocaleString() : "–";
}

function fmtDuration(seconds) {
  if (!isNum(seconds)) return "–";
  const s = Math.max(0, Math.round(Number(seconds)));
  const [hours, minutes] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60)];
  if (hours) return `${hours}h ${minutes}m`;
  return minutes ? `${minutes}m ${s % 60}s` : `${s}s`;
}

const taskState = (task) => task.state || task.status || "queued";
const percent = (task) => Math.max(0, Math.min(100, Number(task.progress) || 0));

/** A progress bar element (`.progress` > `.bar` + `.progress-text`) that updateProgress() fills. */
function progressBar() {
  return h("div", { class: "progress" }, h("div", { class: "bar" }), h("span", { class: "progress-text" }, "0%"));
}

function updateProgress(el, task) {
  const p = percent(task);
  el.querySelector(".bar").style.width = `${p}%`;
  el.querySelector(".progress-text").textContent = `${Math.round(p * 10) / 10}%`;
  el.dataset.state = taskState(task);
}

function statusBadge(el, task) {
  const state = taskState(task);
  el.textContent = state;
  el.classList.remove(...[...el.classList].filter((c) => c.startsWith("state-")));
  el.classList.add(`state-${state}`);
  el.dataset.state = state;
}

/** Run async `fn` now and then `ms` after each run finishes; returns a stop function. */
function every(ms, fn) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    await fn().catch((err) => err instanceof AuthError || console.warn(err));
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => ((stopped = true), clearTimeout(timer));
}

const onCleanup = (fn) => pageCleanups.push(fn);

// ---------------------------------------------------------------- API + auth

class AuthError extends Error {}

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status; // HTTP status code
  }
}

function authHeaders() {
  const token = localStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** fetch() wrapper used for every request: adds the token, handles 401, raises readable errors. */
async function apiFetch(path, options = {}) {
  const headers = { ...authHeaders(), ...(options.headers || {}) };
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json) };
  }
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    showTokenDialog(Boolean(localStorage.getItem(TOKEN_KEY)));
    throw new AuthError("authentication required");
  }
  if (!response.ok) throw new ApiError(await errorMessage(response), response.status);
  return response;
}

async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const detail = body.detail ?? body.error?.message ?? text;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    return JSON.stringify(detail);
  } catch {
    return text || `${response.status} ${response.statusText}`;
  }
}

/** Request `path` and parse the JSON answer. */
const api = async (path, options = {}) => (await apiFetch(path, options)).json();

function showTokenDialog(rejected) {
  const dialog = $("#token-dialog");
  if (!dialog.hidden) return;
  const rejectedText = "That token was rejected. Enter a valid token.";
  setText("#token-message", rejected ? rejectedText : "The server needs a token. It is kept in this browser only.");
  dialog.hidden = false;
  $("#token-input").focus();
}

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("#token-input").value.trim();
  if (!token) return;
  localStorage.setItem(TOKEN_KEY, token);
  $("#token-input").value = "";
  $("#token-dialog").hidden = true;
  route();
});

// ---------------------------------------------------------------- Server-Sent Events over fetch

/** Read an SSE stream with fetch (so the Authorization header is sent); calls onEvent(name, data). */
async function readEvents(path, onEvent, signal) {
  const response = await apiFetch(path, { signal, headers: { Accept: "text/event-stream" } });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { name: "message", data: [] };
  const dispatch = () => {
    if (event.data.length || event.name !== "message") onEvent(event.name, parseData(event.data.join("\n")));
    event = { name: "message", data: [] };
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const lines = buffer.split(/\r\n|\n|\r(?!$)/); // a trailing \r may be half of \r\n
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") dispatch();
      else if (line.startsWith(":")) continue;
      else {
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let val = colon === -1 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") event.name = val;
        else if (field === "data") event.data.push(val);
      }
    }
  }
  dispatch();
}

function parseData(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text; // not JSON: hand over the raw string
  }
}

// ---------------------------------------------------------------- routing

const routes = [
  { pattern: /^\/?$/, nav: "jobs", render: renderJobs },
  { pattern: /^\/new$/, nav: "new", render: renderNewJob },
  { pattern: /^\/jobs\/(.+)$/, nav: "jobs", render: renderJob },
  { pattern: /^\/models$/, nav: "models", render: renderModels },
  { pattern: /^\/playground$/, nav: "playground", render: renderPlayground },
];

function route() {
  pageCleanups.forEach((fn) => fn());
  pageCleanups = [];
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const match = routes.find((r) => r.pattern.test(path)) || routes[0];
  const args = path.match(match.pattern) || [];
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.route === match.nav));
  app.replaceChildren();
  match.render(params, ...args.slice(1).map(decodeURIComponent));
}

function mount(templateId) {
  const page = document.getElementById(templateId).content.cloneNode(true);
  app.replaceChildren(page);
}

window.addEventListener("hashchange", route);

// ---------------------------------------------------------------- job list

function renderJobs() {
  mount("tpl-jobs");
  const filter = $("#status-filter");
  const refresh = async () => {
    const params = new URLSearchParams({ limit: "50", offset: "0" });
    if (filter.value) params.set("status", filter.value);
    try {
      const page = await api(`/train/history?${params}`);
      updateJobRows(page.tasks || []);
      setText("#jobs-total", String(page.total ?? (page.tasks || []).length));
      setText("#jobs-error", "");
    } catch (err) {
      if (!(err instanceof AuthError)) setText("#jobs-error", `Could not load jobs: ${err.message}`);
    }
  };
  filter.addEventListener("change", refresh);
  onCleanup(every(1000, refresh));
}

function updateJobRows(tasks) {
  const body = $("#jobs-body");
  if (!body) return;
  const existing = new Map([...body.children].map((tr) => [tr.dataset.taskId, tr]));
  const rows = tasks.map((task) => {
    const tr = existing.get(task.task_id) || jobRow(task);
    fillJobRow(tr, task);
    return tr;
  });
  body.replaceChildren(...rows);
  $("#jobs-empty").hidden = rows.length > 0;
}

function jobRow(task) {
  const href = `#/jobs/${encodeURIComponent(task.task_id)}`;
  const tr = h(
    "tr",
    { dataset: { taskId: task.task_id }, class: "clickable" },
    h("td", {}, h("a", { class: "task-id", href }, task.task_id)),
    h("td", {}, h("span", { class: "status badge" })),
    h("td", {}, progressBar()),
    h("td", { class: "loss num" }),
    h("td", { class: "base-model" }),
    h("td", { class: "created" }),
  );
  tr.addEventListener("click", (event) => {
    if (!event.target.closest("a")) location.hash = href;
  });
  return tr;
}

function fillJobRow(tr, task) {
  tr.dataset.status = task.status;
  tr.dataset.state = taskState(task);
  statusBadge(tr.querySelector(".status"), task);
  updateProgress(tr.querySelector(".progress"), task);
  tr.querySelector(".loss").textContent = fmtNumber(task.loss);
  tr.querySelector(".base-model").textContent = task.base_model || "–";
  tr.querySelector(".created").textContent = fmtTime(task.created_at);
}

// ---------------------------------------------------------------- new job form

const NUMBER_FIELDS = ["num_epochs", "batch_size", "learning_rate", "max_steps", "save_steps", "logging_steps"];

function renderNewJob() {
  mount("tpl-new");
  const form = $("#new-job-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#form-error");
    error.hidden = true;
    const button = $("#start-job");
    button.disabled = true;
    try {
      const result = await api("/train", { method: "POST", json: formPayload(form) });
      location.hash = `#/jobs/${encodeURIComponent(result.task_id)}`;
    } catch (err) {
      if (!(err instanceof AuthError)) {
        error.textContent = err.message;
        error.hidden = false;
      }
    } finally {
      button.disabled = false;
    }
  });
}

/** The form as a JSON body: empty optional fields are left out, numeric fields are numbers. */
function formPayload(form) {
  const payload = {};
  for (const [name, raw] of new FormData(form).entries()) {
    const value = String(raw).trim();
    if (value === "") continue;
    payload[name] = NUMBER_FIELDS.includes(name) && Number.isFinite(Number(value)) ? Number(value) : value;
  }
  return payload;
}

// ---------------------------------------------------------------- job page

function renderJob(_params, taskId) {
  mount("tpl-job");
  setText("#job-id", taskId);
  const chart = new LossChart($("#loss-chart"));
  const job = { id: taskId, task: null, streamDone: false };
  const base = `/train/${encodeURIComponent(taskId)}`;

  const refreshStatus = async () => {
    const before = job.task && taskState(job.task);
    showTask(job, await api(`/train/status/${encodeURIComponent(taskId)}`));
    showJobError(null, "poll");
    // Resumed elsewhere after our event stream ended: render again to follow the new run.
    if (job.streamDone && TERMINAL_STATES.has(before) && ACTIVE_STATES.has(taskState(job.task))) route();
  };
  const refreshLog = async () => showLog(await (await apiFetch(`${base}/logs?tail=200`)).text());

  bindJobButtons(job, base, refreshStatus);
  onCleanup(every(2000, async () => {
    await refreshStatus().catch((err) => showJobError(err, "poll"));
    await refreshLog().catch(() => {});
  }));
  const controller = new AbortController();
  onCleanup(() => controller.abort());
  window.addEventListener("resize", chart.draw);
  onCleanup(() => window.removeEventListener("resize", chart.draw));
  loadMetrics(base, chart)
    .then(() => followEvents(job, base, chart, controller.signal))
    .finally(() => (job.streamDone = true));
}

/** Show a request error in #job-action-error; `source` "poll" messages clear on the next good poll. */
function showJobError(err, source = "action") {
  const el = $("#job-action-error");
  if (!el || err instanceof AuthError) return;
  if (!err) {
    if (el.dataset.source === source) el.hidden = true;
    return;
  }
  el.textContent = err.message;
  el.dataset.source = source;
  el.hidden = false;
}

function showTask(job, task) {
  if (!$("#job-page")) return;
  job.task = task;
  const state = taskState(task);
  statusBadge($("#job-status"), task);
  updateProgress($("#job-progress"), task);
  setText("#job-step", task.total_steps ? `${task.current_step ?? 0} / ${task.total_steps}` : "–");
  setText("#job-loss", fmtNumber(task.loss));
  setText("#job-eta", ACTIVE_STATES.has(state) ? fmtDuration(task.eta_seconds) : "–");
  showDetails(task);
  const error = $("#job-error");
  error.textContent = task.error || "";
  error.hidden = !task.error;
  $("#stop-job").disabled = !(state === "queued" || state === "running");
  $("#resume-job").disabled = !RESUMABLE_STATES.has(state);
  $("#delete-job").disabled = state === "running" || state === "stopping";
  showFineTunedModel(task);
}

function showDetails(task) {
  const rows = [
    ["Phase", task.phase],
    ["Base model", task.base_model],
    ["Dataset", task.dataset_path],
    ["Output dir", task.output_dir],
    ["Adapter", task.adapter_path],
    ["Eval loss", task.eval_loss === null || task.eval_loss === undefined ? null : fmtNumber(task.eval_loss)],
    ["Created", fmtTime(task.created_at)],
    ["Started", task.started_at ? fmtTime(task.started_at) : null],
    ["Finished", task.finished_at ? fmtTime(task.finished_at) : null],
  ];
  $("#job-details").replaceChildren(
    ...rows.filter(([, v]) => v).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]),
  );
}

function showFineTunedModel(task) {
  const el = $("#job-model");
  const model = task.fine_tuned_model;
  if (!model || taskState(task) !== "completed") {
    el.hidden = true;
    return;
  }
  if (el.dataset.model === model) return;
  el.dataset.model = model;
  const href = `#/playground?model=${encodeURIComponent(model)}`;
  el.replaceChildren(
    "Fine-tuned model: ",
    h("code", {}, model),
    " ",
    h("a", { id: "job-model-link", class: "button", href }, "Try it in the playground"),
  );
  el.hidden = false;
}

function showLog(text) {
  const pre = $("#job-log");
  if (!pre || pre.textContent === text) return;
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = text;
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

function bindJobButtons(job, base, refreshStatus) {
  const action = (selector, run) =>
    $(selector).addEventListener("click", async (event) => {
      event.currentTarget.disabled = true;
      showJobError(null, "action");
      try {
        await run();
      } catch (err) {
        showJobError(err);
      }
      await refreshStatus().catch(() => {});
    });
  action("#stop-job", async () => showTask(job, await api(`${base}/stop`, { method: "POST" })));
  action("#resume-job", async () => {
    showTask(job, await api(`${base}/resume`, { method: "POST" }));
    if (job.streamDone) route(); // render again to follow the resumed run's event stream
  });
  $("#delete-job").addEventListener("click", async () => {
    try {
      await api(base, { method: "DELETE" });
      location.hash = "#/";
    } catch (err) {
      showJobError(err);
    }
  });
}

async function loadMetrics(base, chart) {
  try {
    const metrics = await api(`${base}/metrics`);
    (metrics.log || []).forEach((record) => chart.add(record));
    chart.draw();
  } catch (err) {
    if (!(err instanceof AuthError)) console.warn("metrics:", err.message);
  }
}

/** Follow /train/<id>/events; reconnects after network errors while the job is not finished. */
async function followEvents(job, base, chart, signal) {
  while (!signal.aborted) {
    try {
      return await readEvents(`${base}/events`, (name, data) => handleEvent(job, chart, name, data), signal);
    } catch (err) {
      if (signal.aborted || err instanceof AuthError || err.status === 404) return;
    }
    if (job.task && TERMINAL_STATES.has(taskState(job.task))) return;
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
}

function handleEvent(job, chart, name, data) {
  if (name === "metrics") {
    chart.add(data);
    chart.draw();
    if (job.task && data && ACTIVE_STATES.has(taskState(job.task))) showTask(job, metricsToTask(job.task, data));
  } else if (name === "status" && data && typeof data === "object") {
    showTask(job, data);
    addEventItem("status", `status: ${taskState(data)} · ${Math.round(percent(data))}%`, null);
  } else if (name === "pipeline" && data && typeof data === "object") {
    const text = [data.description || data.action_id, data.action_state && `(${data.action_state})`]
      .filter(Boolean)
      .join(" ");
    addEventItem("pipeline", text, data.time);
  } else if (name === "end") {
    const list = $("#job-events");
    if (list) list.dataset.ended = "true";
  }
}

/** Fold a trainer_log record into the last known task so the header moves between status polls. */
function metricsToTask(task, record) {
  const merged = { ...task };
  if (Number.isFinite(Number(record.percentage))) merged.progress = Number(record.percentage);
  if (record.current_steps !== undefined) merged.current_step = record.current_steps;
  if (record.total_steps) merged.total_steps = record.total_steps;
  if (record.loss !== undefined && record.loss !== null) merged.loss = record.loss;
  return merged;
}

function addEventItem(kind, text, time) {
  const list = $("#job-events");
  if (!list) return;
  const when = typeof time === "number" ? new Date(time * 1000) : time ? new Date(time) : new Date();
  const stamp = Number.isNaN(when.getTime()) ? "" : when.toLocaleTimeString();
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(h("li", { dataset: { event: kind } }, h("time", {}, stamp), h("span", {}, text)));
  if (atBottom) list.scrollTop = list.scrollHeight;
}

// ---------------------------------------------------------------- loss chart (canvas)

class LossChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.loss = new Map(); // step -> loss
    this.evalLoss = new Map(); // step -> eval_loss
    this.draw = this.draw.bind(this);
  }

  add(record) {
    if (!record || typeof record !== "object") return;
    const step = record.current_steps ?? record.step;
    if (!isNum(step)) return;
    if (isNum(record.loss)) this.loss.set(Number(step), Number(record.loss));
    if (isNum(record.eval_loss)) this.evalLoss.set(Number(step), Number(record.eval_loss));
  }

  series() {
    const sorted = (map) => [...map.entries()].sort((a, b) => a[0] - b[0]);
    return [
      { label: "loss", color: "#2563eb", points: sorted(this.loss) },
      { label: "eval_loss", color: "#ea580c", points: sorted(this.evalLoss) },
    ];
  }

  draw() {
    const canvas = this.canvas;
    if (!canvas.isConnected) return;
    canvas.dataset.points = String(this.loss.size);
    canvas.dataset.evalPoints = String(this.evalLoss.size);
    const ratio = window.devicePixelRatio || 1;
    const [width, height] = [canvas.clientWidth || 600, canvas.clientHeight || 280];
    [canvas.width, canvas.height] = [Math.round(width * ratio), Math.round(height * ratio)];
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.font = "12px system-ui, sans-serif";
    const series = this.series().filter((s) => s.points.length);
    if (!series.length) {
      Object.assign(ctx, { fillStyle: "#6b7280", textAlign: "center" });
      return ctx.fillText("No loss values yet", width / 2, height / 2);
    }
    const box = { left: 66, right: width - 16, top: 24, bottom: height - 40 };
    const bounds = chartBounds(series);
    const x = (v) => box.left + ((v - bounds.x0) / (bounds.x1 - bounds.x0)) * (box.right - box.left);
    const y = (v) => box.bottom - ((v - bounds.y0) / (bounds.y1 - bounds.y0)) * (box.bottom - box.top);
    drawAxes(ctx, box, bounds, x, y);
    series.forEach((s) => drawSeries(ctx, s, x, y));
    drawLegend(ctx, series, box);
  }
}

function chartBounds(series) {
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  const pad = (y1 - y0) * 0.08 || Math.abs(y0) * 0.1 || 1;
  [y0, y1] = [Math.max(0, y0 - pad), y1 + pad];
  return { x0, x1, y0, y1 };
}

/** About `count` round tick values (1, 2 or 5 times a power of ten apart) within [lo, hi]. */
function ticks(lo, hi, count, minStep = 0) {
  const raw = Math.max((hi - lo) / count, minStep);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((m) => m >= raw);
  const values = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) values.push(Number(v.toPrecision(12)));
  return values;
}

function line(ctx, points) {
  ctx.beginPath();
  points.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
  ctx.stroke();
}

/** Grid lines with y tick labels, x tick labels, the axes and their titles ("step", "loss"). */
function drawAxes(ctx, box, bounds, x, y) {
  Object.assign(ctx, { strokeStyle: "#e5e7eb", fillStyle: "#6b7280", lineWidth: 1, textAlign: "right", textBaseline: "middle" });
  for (const v of ticks(bounds.y0, bounds.y1, 6)) {
    line(ctx, [[box.left, y(v)], [box.right, y(v)]]);
    ctx.fillText(String(v), box.left - 6, y(v));
  }
  Object.assign(ctx, { strokeStyle: "#9ca3af", textAlign: "center", textBaseline: "top" });
  for (const v of ticks(bounds.x0, bounds.x1, 6, 1)) ctx.fillText(String(v), x(v), box.bottom + 6);
  line(ctx, [[box.left, box.top], [box.left, box.bottom], [box.right, box.bottom]]);
  ctx.fillText("step", (box.left + box.right) / 2, box.bottom + 22);
  ctx.save();
  ctx.translate(12, (box.top + box.bottom) / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.fillText("loss", 0, -6);
  ctx.restore();
}

function drawSeries(ctx, s, x, y) {
  Object.assign(ctx, { strokeStyle: s.color, fillStyle: s.color, lineWidth: 2 });
  line(ctx, s.points.map(([px, py]) => [x(px), y(py)]));
  if (s.points.length >= 60) return; // dots only while they stay readable
  for (const [px, py] of s.points) {
    ctx.beginPath();
    ctx.arc(x(px), y(py), 2.5, 0, Math.PI * 2);
    ctx.fill();
  }
}

function drawLegend(ctx, series, box) {
  Object.assign(ctx, { textAlign: "left", textBaseline: "middle" });
  let left = box.right;
  for (const s of [...series].reverse()) {
    left -= ctx.measureText(s.label).width + 22;
    ctx.fillStyle = s.color;
    ctx.fillRect(left, box.top - 14, 12, 3);
    ctx.fillStyle = "#374151";
    ctx.fillText(s.label, left + 16, box.top - 13);
    left -= 8;
  }
}

// ---------------------------------------------------------------- models page

function renderModels() {
  mount("tpl-models");
  const models = api("/models"); // one request feeds two lists
  loadList("#models-list", models, (body) => body.models, modelItem);
  loadList("#served-list", models, (body) => body.served, servedItem);
  loadList("#services-list", api("/services"), (body) => body.services, serviceItem);
  loadList("#datasets-list", api("/datasets"), (body) => body.datasets, datasetItem);
}

const muted = (...parts) => h("div", { class: "muted" }, parts.filter((p) => p || p === 0).join(" · "));
const badge = (text, state) => h("span", { class: state ? `badge state-${state}` : "badge" }, text || "?");

function modelItem(model) {
  const versions = (model.versions || []).map((v) =>
    h("li", { dataset: { versionId: v.id } },
      h("code", {}, `v${v.version}`), " ",
      muted(v.base_model, v.run_id && `run ${v.run_id}`, v.created, v.adapter_path)));
  return h("li", { dataset: { modelId: model.id } },
    h("strong", {}, model.name || model.id),
    versions.length ? h("ul", { class: "versions" }, versions) : muted("no versions"));
}

function servedItem(model) {
  return h("li", { dataset: { modelId: model.id } },
    h("code", {}, model.id), " ", badge(model.kind), model.parent ? muted(`from ${model.parent}`) : null);
}

function serviceItem(service) {
  return h("li", { dataset: { serviceId: service.id } },
    h("strong", {}, service.name || service.id), " ", badge(service.status, service.status),
    muted(service.service_type, ...(service.endpoints || []).map((e) => (typeof e === "string" ? e : JSON.stringify(e)))));
}

function datasetItem(dataset) {
  return h("li", { dataset: { datasetId: dataset.id } },
    h("strong", {}, dataset.name || dataset.id), " ", badge(dataset.format),
    muted(dataset.path, isNum(dataset.records) && `${dataset.records} records`));
}

/** Fill a list from a pending JSON request; `pick` selects the array, `render` makes one <li>. */
async function loadList(selector, request, pick, render) {
  const list = $(selector);
  list.replaceChildren(h("li", { class: "muted" }, "Loading…"));
  try {
    const items = pick(await request) || [];
    list.replaceChildren(...(items.length ? items.map(render) : [h("li", { class: "muted" }, "None")]));
  } catch (err) {
    if (!(err instanceof AuthError)) list.replaceChildren(h("li", { class: "error" }, `Could not load: ${err.message}`));
  }
}

// ---------------------------------------------------------------- playground

function renderPlayground(params) {
  mount("tpl-playground");
  const conversation = [];
  const wanted = params.get("model");
  fillModelSelect(wanted);
  const form = $("#pg-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage(conversation);
  });
  $("#pg-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  $("#pg-clear").addEventListener("click", () => {
    conversation.length = 0;
    $("#pg-messages").replaceChildren();
  });
}

async function fillModelSelect(wanted) {
  const select = $("#pg-model");
  let ids = [];
  try {
    const body = await api("/v1/models");
    ids = (body.data || []).filter((m) => !m.kind || m.kind === "generate").map((m) => m.id);
  } catch (err) {
    if (!(err instanceof AuthError)) addMessage("error", `Could not list models: ${err.message}`);
  }
  if (wanted && !ids.includes(wanted)) ids.unshift(wanted);
  if (!$("#playground")) return;
  select.replaceChildren(...ids.map((id) => h("option", { value: id }, id)));
  if (wanted) select.value = wanted;
}

function addMessage(role, text) {
  const box = $("#pg-messages");
  if (!box) return null;
  const el = h("div", { class: `msg ${role}` }, h("span", { class: "role" }, role), h("div", { class: "content" }, text));
  box.append(el);
  box.scrollTop = box.scrollHeight;
  return el;
}

async function sendMessage(conversation) {
  const input = $("#pg-input");
  const text = input.value.trim();
  const model = $("#pg-model-custom").value.trim() || $("#pg-model").value;
  if (!text) return;
  if (!model) {
    addMessage("error", "Choose a model or type a model id.");
    return;
  }
  const button = $("#pg-send");
  conversation.push({ role: "user", content: text });
  addMessage("user", text);
  input.value = "";
  button.disabled = true;
  try {
    const reply = await api("/v1/chat/completions", {
      method: "POST",
      json: {
        model,
        messages: conversation,
        max_tokens: Number($("#pg-max-tokens").value) || 32,
        temperature: Number($("#pg-temperature").value) || 0,
      },
    });
    const content = reply.choices?.[0]?.message?.content ?? "";
    conversation.push({ role: "assistant", content });
    addMessage("assistant", content);
  } catch (err) {
    conversation.pop();
    addMessage("error", err instanceof AuthError ? "Authentication required." : err.message);
  } finally {
    if ($("#pg-send")) button.disabled = false;
  }
}

// ---------------------------------------------------------------- start

route();
