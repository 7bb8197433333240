// rnnlm playground: three panels over the service's own JSON API (the same calls as /docs).
//
//   Next token  ─ POST next-token  (debounced as you type)  ─▶ bar chart + entropy
//   Generate    ─ POST generate    (stream: true, SSE read through fetch) ─▶ heat-shaded tokens
//   Rerank      ─ POST score       (per_token: true) ─▶ ranked table + per-token heat map
//   header      ─ GET  models      ─▶ model picker (when several are served) + summary
//
// Plain browser JavaScript, no dependencies, nothing fetched from outside the service.
// URLs are relative, so the page also works behind a reverse proxy under a sub-path.
"use strict";

const $ = (selector) => document.querySelector(selector);

const SPECIAL_LABELS = { "<eos>": "</s>", "<unk>": "<unk>", "<bos>": "<s>", "<pad>": "<pad>" };
const HEAT_FULL_NATS = 10; // a token with this surprisal (p ≈ 4.5e-5) gets the hottest colour
const DEBOUNCE_MS = 250;
const FINISH_REASONS = { length: "max tokens reached", eos: "end of sentence", stop: "stop string" };

const state = {
  models: [], // what GET /models returned, one object per served model
  model: null, // the chosen model's name (sent only when several are served)
};

// -- talking to the service ---------------------------------------------------------------
class ApiError extends Error {
  constructor(message, field, status) {
    super(message);
    this.name = "ApiError";
    this.field = field; // the request field the service blames, e.g. "top_k" (or null)
    this.status = status;
  }
}

/** Read the service's error body, {"error": {"type", "message", "field", "status"}}, into an ApiError. */
async function apiErrorFrom(response) {
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    // not JSON (a proxy in between?): fall back to the status line
  }
  return errorFromPayload(payload, response.status, response.statusText);
}

function errorFromPayload(payload, status = 0, statusText = "") {
  const error = payload?.error;
  if (error?.message) return new ApiError(error.message, error.field ?? null, error.status ?? status);
  return new ApiError(`The service answered ${status} ${statusText}`.trim(), null, status);
}

async function postJSON(path, body, signal) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await apiErrorFrom(response);
  return response.json();
}

/** Server-sent events from a fetch() body (EventSource cannot POST). Yields {event, data}. */
async function* readServerSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = /\r\n\r\n|\n\n|\r\r/.exec(buffer))) {
        const event = parseEventBlock(buffer.slice(0, end.index));
        buffer = buffer.slice(end.index + end[0].length);
        if (event) yield event;
      }
    }
    const last = parseEventBlock(buffer);
    if (last) yield last;
  } finally {
    reader.releaseLock();
  }
}

function parseEventBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split(/\r\n|\r|\n/)) {
    if (!line || line.startsWith(":")) continue; // blank or comment (keep-alive ping)
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "event") event = value;
    else if (name === "data") data.push(value);
  }
  return data.length ? { event, data: data.join("\n") } : null;
}

/** The request body plus the chosen model, when there is a choice to make. */
function withModel(body) {
  return state.models.length > 1 && state.model ? { ...body, model: state.model } : body;
}

function currentModel() {
  return state.models.find((m) => m.name === state.model) ?? state.models[0] ?? null;
}

/** What goes between two tokens of decoded text: nothing for characters, a space for words. */
function joiner() {
  return currentModel()?.tokenizer === "word" ? " " : "";
}

// -- small helpers ------------------------------------------------------------------------
const MINUS = "\u2212";

function fmt(x, digits = 2) {
  if (x === null || x === undefined || Number.isNaN(x)) return "n/a";
  if (!Number.isFinite(x)) return x > 0 ? "∞" : `${MINUS}∞`;
  const s = x.toFixed(digits);
  return s.startsWith("-") ? MINUS + s.slice(1) : s;
}

function fmtProb(p) {
  if (p >= 0.001) return p.toFixed(4);
  return p.toExponential(2);
}

function fmtPercent(p) {
  if (p >= 0.1) return `${(p * 100).toFixed(1)}%`;
  if (p >= 0.001) return `${(p * 100).toFixed(2)}%`;
  return `${(p * 100).toExponential(1)}%`;
}

function fmtCount(n) {
  if (typeof n !== "number") return String(n);
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return n.toLocaleString("en");
}

function isSpecial(token) {
  return Object.hasOwn(SPECIAL_LABELS, token);
}

function displayToken(token) {
  if (isSpecial(token)) return SPECIAL_LABELS[token];
  if (token === " ") return "␠";
  if (token === "\n") return "⏎";
  if (token === "\t") return "⇥";
  return token;
}

/** A span shaded by the token's surprisal, with the exact figures on hover (title). */
function heatToken(text, logprob, { special = false } = {}) {
  const span = document.createElement("span");
  span.className = special ? "tok special" : "tok";
  span.textContent = text;
  span.tabIndex = -1; // reachable with the arrow keys (see tokenInspector)
  if (typeof logprob === "number") {
    const heat = Math.min(1, Math.max(0, -logprob / HEAT_FULL_NATS));
    span.style.setProperty("--heat", heat.toFixed(3));
    span.dataset.logprob = String(logprob);
    span.title = `${JSON.stringify(text)}  p = ${fmtProb(Math.exp(logprob))}  (log-prob ${fmt(logprob, 3)})`;
  }
  return span;
}

/**
 * Hover or focus a heat-shaded token to read its figures in `readout`; once one token has the
 * focus (Tab reaches the first), the arrow keys walk through the rest.
 */
function tokenInspector(container, readout) {
  const idle = readout.textContent;
  const show = (tok) => {
    if (!tok?.dataset.logprob) return;
    const logprob = Number(tok.dataset.logprob);
    readout.replaceChildren(el("strong", {}, tok.textContent),
      `  p = ${fmtProb(Math.exp(logprob))} · log-prob ${fmt(logprob, 3)}`);
  };
  container.addEventListener("mouseover", (event) => show(event.target.closest(".tok")));
  container.addEventListener("focusin", (event) => show(event.target.closest(".tok")));
  container.addEventListener("keydown", (event) => {
    const moves = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1, Home: -Infinity, End: Infinity };
    const step = moves[event.key];
    const tokens = [...container.querySelectorAll(".tok")];
    const at = tokens.indexOf(document.activeElement);
    if (step === undefined || at < 0) return;
    event.preventDefault();
    const next = tokens[Math.min(tokens.length - 1, Math.max(0, at + step))];
    tokens[at].tabIndex = -1;
    next.tabIndex = 0;
    next.focus();
  });
  return {
    /** New tokens were drawn: the first one is the way in for the keyboard. */
    reset() {
      readout.textContent = idle;
      const first = container.querySelector(".tok");
      if (first) first.tabIndex = 0;
    },
  };
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

/**
 * Read a number input. Empty means "use the service's default" (the field is left out);
 * anything else is sent as typed, so the service's own validation decides and explains.
 */
function numberField(input) {
  if (input.value.trim() === "") {
    if (input.validity.badInput) {
      throw new ApiError(`${input.labels[0].textContent}: not a number`, input.dataset.field);
    }
    return undefined;
  }
  return Number(input.value);
}

function compact(body) {
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined));
}

// -- errors shown in place ----------------------------------------------------------------
function showError(form, box, err) {
  clearError(form, box);
  box.replaceChildren(err.message);
  box.hidden = false;
  const name = (err.field || "").split(/[.[]/)[0];
  const input = name && form.querySelector(`[data-field="${CSS.escape(name)}"]`);
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", box.id);
  }
}

function clearError(form, box) {
  box.hidden = true;
  box.replaceChildren();
  for (const input of form.querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
    input.removeAttribute("aria-describedby");
  }
}

function submitOnCtrlEnter(textarea, form) {
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
}

// -- tabs -----------------------------------------------------------------------------------
const panelOpened = new Map(); // panel id -> callback run the first time it is shown

function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab, { focus = false, updateHash = true } = {}) => {
    for (const t of tabs) {
      const selected = t === tab;
      t.setAttribute("aria-selected", String(selected));
      t.tabIndex = selected ? 0 : -1;
      $(`#${t.getAttribute("aria-controls")}`).hidden = !selected;
    }
    if (focus) tab.focus();
    const panel = tab.getAttribute("aria-controls");
    if (updateHash) history.replaceState(null, "", `#${panel.replace("panel-", "")}`);
    const first = panelOpened.get(panel);
    if (first) {
      panelOpened.delete(panel);
      first();
    }
  };
  for (const tab of tabs) {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      const i = tabs.indexOf(tab);
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
      if (next === undefined) return;
      event.preventDefault();
      select(tabs[(next + tabs.length) % tabs.length], { focus: true });
    });
  }
  const fromHash = tabs.find((t) => t.id === `tab-${location.hash.slice(1)}`);
  select(fromHash ?? tabs[0], { updateHash: Boolean(fromHash) });
  return select;
}

// -- models ---------------------------------------------------------------------------------
const modelListeners = [];

async function loadModels() {
  const errorBox = $("#models-error");
  for (let attempt = 0; ; attempt++) {
    try {
      const response = await fetch("models", { headers: { Accept: "application/json" } });
      if (response.status === 503) {
        // still loading the checkpoint: say so and try again shortly
        renderSummaryMessage("loading the model…");
        await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 4000)));
        continue;
      }
      if (!response.ok) throw await apiErrorFrom(response);
      const payload = await response.json();
      errorBox.hidden = true;
      return payload.models;
    } catch (err) {
      errorBox.textContent = `Could not list the models: ${err.message}`;
      errorBox.hidden = false;
      renderSummaryMessage("unavailable");
      return [];
    }
  }
}

function renderSummaryMessage(text) {
  $("#model-summary").replaceChildren(el("div", {}, el("dt", {}, "Model"), el("dd", {}, text)));
}

/** [label, value] pairs for the header, from one GET /models entry. */
function modelFacts(m) {
  const arch = m.architecture ?? {};
  const data = m.training?.data ?? {};
  const test = m.metrics?.test ?? {};
  const network = [arch.cell?.toUpperCase(), arch.num_layers && `${arch.num_layers}×${arch.hidden_dim}`];
  const lines = data.train_lines && `, ${fmtCount(data.train_lines)} sentences`;
  const facts = [
    ["Model", m.name],
    ["Network", network.filter(Boolean).join(" ") || m.kind],
    ["Vocabulary", `${fmtCount(m.vocab_size)} ${m.tokenizer === "char" ? "characters" : `${m.tokenizer}s`}`],
    ["Parameters", typeof m.parameters === "number" && fmtCount(m.parameters)],
    ["Trained on", data.corpus && `${data.corpus}${lines || ""}`],
    ["Test perplexity", typeof test.perplexity === "number" && test.perplexity.toFixed(2)],
    ["Device", m.device],
  ];
  return facts.filter(([, value]) => value !== undefined && value !== null && value !== false && value !== "");
}

function renderModels() {
  const picker = $("#model-picker");
  const select = $("#model-select");
  picker.hidden = state.models.length < 2;
  select.replaceChildren(...state.models.map((m) => el("option", { value: m.name }, m.name)));
  if (state.model) select.value = state.model;
  const model = currentModel();
  if (!model) return;
  const facts = modelFacts(model).filter(([label]) => label !== "Model" || picker.hidden);
  $("#model-summary").replaceChildren(
    ...facts.map(([label, value]) => el("div", {}, el("dt", {}, label), el("dd", {}, String(value)))),
  );
}

function setupModels() {
  $("#model-select").addEventListener("change", (event) => {
    state.model = event.target.value;
    renderModels();
    for (const listener of modelListeners) listener();
  });
}

// -- panel 1: next token --------------------------------------------------------------------
function setupNextToken() {
  const form = $("#next-form");
  const text = $("#next-text");
  const topK = $("#next-topk");
  const errorBox = $("#next-error");
  const result = $("#next-result");
  let timer = null;
  let controller = null;
  let generation = 0; // only the newest request may draw
  let focusBarsAfterRender = false;

  async function update() {
    clearTimeout(timer);
    controller?.abort();
    controller = new AbortController();
    const mine = ++generation;
    result.setAttribute("aria-busy", "true");
    try {
      const body = withModel(compact({ text: text.value, top_k: numberField(topK) }));
      const data = await postJSON("next-token", body, controller.signal);
      if (mine !== generation) return;
      clearError(form, errorBox);
      render(data, body.text);
    } catch (err) {
      if (err.name === "AbortError" || mine !== generation) return;
      showError(form, errorBox, err);
    } finally {
      if (mine === generation) result.setAttribute("aria-busy", "false");
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(update, DEBOUNCE_MS);
  }

  function render(data, forText) {
    result.dataset.text = forText; // which text the chart shows (tests wait on it)
    const chips = (data.tokens ?? []).map((t) =>
      el("span", { class: `chip${isSpecial(t) ? " special" : ""}${t === "<unk>" ? " oov" : ""}`,
        title: t === "<unk>" ? "not in the vocabulary" : "" }, displayToken(t)));
    if (!chips.length) chips.push(el("span", { class: "muted" }, "only the start of a sentence"));
    if (data.oov) chips.push(el("span", { class: "chip oov", title: "read as <unk>" }, `${data.oov} unknown`));
    $("#next-tokens").replaceChildren(...chips);

    const next = data.next ?? [];
    const top = next.length ? next[0].prob : 1;
    const bars = next.map((n, i) => el("li", {}, bar(n, i, top)));
    $("#next-bars").replaceChildren(...bars);
    $("#next-placeholder").hidden = bars.length > 0;

    const mass = next.reduce((sum, n) => sum + n.prob, 0);
    const stats = $("#next-stats");
    stats.dataset.entropy = String(data.entropy);
    stats.replaceChildren(
      "entropy ", el("strong", {}, `${fmt(data.entropy)} nats`), ` (${fmt(data.entropy / Math.LN2)} bits)`,
      " · as unsure as a pick among ", el("strong", {}, fmt(Math.exp(data.entropy), 1)), " tokens",
      ` · top ${next.length} hold ${fmtPercent(mass)}`,
    );
    if (focusBarsAfterRender) {
      focusBarsAfterRender = false;
      $("#next-bars .bar:not([aria-disabled])")?.focus();
    }
  }

  /** One bar: a button that appends its token (specials such as </s> are shown but inert). */
  function bar(n, i, top) {
    const special = n.special ?? isSpecial(n.token);
    const label = displayToken(n.token);
    const figures = `p = ${fmtProb(n.prob)}  log-prob ${fmt(n.logprob, 3)}  id ${n.id}`;
    const button = el("button", {
      type: "button",
      class: "bar",
      title: special ? `${n.token}: not text, nothing to append\n${figures}` : figures,
      dataset: { token: n.token, prob: String(n.prob), rank: String(i + 1) },
      "aria-label": `${special ? n.token : label}, ${fmtPercent(n.prob)}${special ? "" : ", append"}`,
    },
    el("span", { class: `bar-token${special ? " special" : ""}` }, label),
    el("span", { class: "bar-track" }, el("span", { class: "bar-fill", style: `width: ${(100 * n.prob) / top}%` })),
    el("span", { class: "bar-prob" }, fmtPercent(n.prob)));
    if (special) button.setAttribute("aria-disabled", "true"); // still focusable, so still readable
    else button.addEventListener("click", (event) => append(n.token, event));
    return button;
  }

  function append(token, event) {
    const sep = text.value && joiner() ? joiner() : "";
    text.value += sep + token;
    focusBarsAfterRender = event.detail === 0; // keyboard "click": keep the focus on the chart
    update();
  }

  text.addEventListener("input", schedule);
  topK.addEventListener("input", schedule);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    update();
  });
  submitOnCtrlEnter(text, form);
  modelListeners.push(update);
  return update;
}

// -- panel 2: generate ----------------------------------------------------------------------
function setupGenerate() {
  const form = $("#gen-form");
  const errorBox = $("#gen-error");
  const output = $("#gen-output");
  const status = $("#gen-status");
  const startButton = $("#gen-start");
  const stopButton = $("#gen-stop");
  const inspector = tokenInspector(output, $("#gen-readout"));
  const fields = {
    prompt: $("#gen-prompt"),
    temperature: $("#gen-temperature"),
    top_k: $("#gen-topk"),
    top_p: $("#gen-topp"),
    max_new_tokens: $("#gen-max"),
    seed: $("#gen-seed"),
  };
  let controller = null;

  function requestBody() {
    return withModel(compact({
      prompt: fields.prompt.value,
      temperature: numberField(fields.temperature),
      top_k: numberField(fields.top_k),
      top_p: numberField(fields.top_p),
      max_new_tokens: numberField(fields.max_new_tokens),
      seed: numberField(fields.seed),
      stream: true,
      return_logprobs: true,
    }));
  }

  function setRunning(running) {
    startButton.disabled = running;
    stopButton.disabled = !running;
    output.classList.toggle("streaming", running);
    output.setAttribute("aria-busy", String(running));
  }

  function describe(run, ending) {
    const parts = [ending];
    parts.push(`${run.tokens} token${run.tokens === 1 ? "" : "s"}`);
    if (run.seed !== undefined && run.seed !== null) parts.push(`seed ${run.seed}`);
    if (run.tokens) {
      const seconds = (performance.now() - run.started) / 1000;
      parts.push(`${(run.tokens / seconds).toFixed(0)} tokens/s`);
      parts.push(`perplexity ${fmt(Math.exp(-run.logprob / run.tokens), 1)}`);
    }
    status.textContent = parts.join(" · ");
  }

  async function start() {
    clearError(form, errorBox);
    let body;
    try {
      body = requestBody();
    } catch (err) {
      showError(form, errorBox, err);
      return;
    }
    controller = new AbortController();
    const run = { tokens: 0, logprob: 0, seed: body.seed, started: performance.now(), text: "" };
    output.replaceChildren(el("span", { class: "prompt" }, body.prompt));
    output.dataset.text = "";
    delete status.dataset.finishReason;
    status.textContent = "generating…";
    setRunning(true);
    try {
      const response = await fetch("generate", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) throw await apiErrorFrom(response);
      // `token` events, one per generated token, then one `done` event with the whole response.
      let done = null;
      for await (const event of readServerSentEvents(response.body)) {
        const data = JSON.parse(event.data);
        if (event.event === "error" || data.error) throw errorFromPayload(data);
        if (event.event === "token") addToken(run, data);
        else if (event.event === "done") done = data;
      }
      if (done) {
        run.seed = done.seed;
        output.dataset.text = done.text;
        status.dataset.finishReason = done.finish_reason;
        describe(run, `finished: ${FINISH_REASONS[done.finish_reason] ?? done.finish_reason}`);
      } else {
        describe(run, "the stream ended early");
      }
    } catch (err) {
      if (err.name === "AbortError") {
        describe(run, "stopped");
        status.dataset.finishReason = "stopped";
      } else {
        status.textContent = "";
        if (!run.tokens) output.replaceChildren(el("span", { class: "placeholder" }, "No output."));
        showError(form, errorBox, err);
      }
    } finally {
      setRunning(false);
      controller = null;
    }
  }

  function addToken(run, data) {
    const special = isSpecial(data.token);
    if (!special && run.tokens && joiner()) output.append(joiner());
    const span = heatToken(special ? displayToken(data.token) : data.token, data.logprob, { special });
    output.append(span);
    if (run.tokens === 0) inspector.reset();
    run.tokens += 1;
    run.logprob += data.logprob;
    run.text += data.text; // what the service says to append (stop strings are held back)
    output.dataset.text = run.text;
  }

  function stop() {
    controller?.abort();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!controller) start();
  });
  stopButton.addEventListener("click", stop);
  form.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && controller) stop();
  });
  submitOnCtrlEnter(fields.prompt, form);
}

// -- panel 3: rerank ------------------------------------------------------------------------
function setupRerank() {
  const form = $("#rerank-form");
  const errorBox = $("#rerank-error");
  const candidatesBox = $("#rerank-candidates");
  const table = $("#rerank-table");
  const inspector = tokenInspector($("#rerank-rows"), $("#rerank-readout"));
  let controller = null;

  async function run() {
    controller?.abort();
    controller = new AbortController();
    const candidates = candidatesBox.value.split(/\r?\n/).filter((line) => line.trim() !== "");
    const context = $("#rerank-context").value;
    const body = withModel(compact({
      candidates,
      context: context === "" ? undefined : context,
      bos: true,
      eos: $("#rerank-eos").checked,
      normalize: $("#rerank-normalize").value,
      per_token: true,
    }));
    $("#rerank-start").disabled = true;
    try {
      const data = await postJSON("score", body, controller.signal);
      clearError(form, errorBox);
      render(data);
    } catch (err) {
      if (err.name === "AbortError") return;
      showError(form, errorBox, err);
    } finally {
      $("#rerank-start").disabled = false;
    }
  }

  function heatMap(result) {
    const cell = el("td", { class: "cand" });
    const scored = result.token_logprobs ?? [];
    if (!scored.length) {
      cell.append(result.text || el("span", { class: "muted" }, "(empty)"));
      return cell;
    }
    scored.forEach(({ token, logprob }, i) => {
      const special = isSpecial(token);
      if (i && !special && joiner()) cell.append(joiner());
      cell.append(heatToken(displayToken(token), logprob, { special }));
    });
    if (result.oov) {
      const unknown = `${result.oov} token${result.oov > 1 ? "s" : ""} not in the vocabulary (read as <unk>)`;
      cell.append(el("span", { class: "oov-note" }, unknown));
    }
    return cell;
  }

  function render(data) {
    const results = data.results ?? [];
    const order = data.ranking ?? results.map((_, i) => i);
    const best = results[order[0]];
    const rows = order.map((index, position) => {
      const r = results[index];
      const delta = r.score - best.score;
      return el("tr", { class: position === 0 ? "best" : "", dataset: { index: String(index), text: r.text } },
        el("td", { class: "rank" }, String(r.rank ?? position + 1)),
        heatMap(r),
        el("td", { class: "num", title: `${r.num_tokens} tokens` }, fmt(r.logprob)),
        el("td", { class: "num" }, fmt(r.perplexity)),
        el("td", { class: "num", title: `score ${fmt(r.score, 3)}` }, position === 0 ? "best" : fmt(delta)));
    });
    $("#rerank-rows").replaceChildren(...rows);
    inspector.reset();
    table.hidden = rows.length === 0;
    $("#rerank-placeholder").hidden = rows.length > 0;

    const stats = $("#rerank-stats");
    if (order.length > 1) {
      const gap = best.score - results[order[1]].score;
      const times = Math.exp(gap);
      stats.replaceChildren(`${results.length} candidates · the best leads by `, el("strong", {}, fmt(gap)),
        ` (${times >= 1000 ? times.toExponential(1) : times.toFixed(1)}× as likely)`);
    } else {
      stats.textContent = `${results.length} candidate`;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  submitOnCtrlEnter(candidatesBox, form);
  modelListeners.push(() => {
    if (!table.hidden) run();
  });
  return run;
}

// -- start ------------------------------------------------------------------------------------
async function main() {
  setupModels();
  const updateNext = setupNextToken();
  setupGenerate();
  const rerank = setupRerank();
  const ready = loadModels().then((models) => {
    state.models = models;
    state.model = (models.find((m) => m.default) ?? models[0])?.name ?? null;
    renderModels();
  });
  panelOpened.set("panel-rerank", () => ready.then(rerank)); // first visit: the homophones, ranked
  setupTabs();
  await ready;
  updateNext();
}

main();
