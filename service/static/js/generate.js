// Panel 2, generate: POST generate (stream: true, SSE read through fetch) ─▶ heat-shaded tokens.

import { compact, errorFromPayload, postEventStream } from "./api.js";
import { $, clearError, el, heatToken, numberField, showError, submitOnCtrlEnter, tokenInspector } from "./dom.js";
import { displayToken, fmt, isSpecial } from "./format.js";
import { joiner, withModel } from "./state.js";

const FINISH_REASONS = Object.freeze({ length: "max tokens reached", eos: "end of sentence", stop: "stop string" });

/** Wire up the panel (Generate / Stop buttons, Ctrl+Enter, Escape). */
export function setupGenerate(state) {
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
    return withModel(state, compact({
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
      // `token` events, one per generated token, then one `done` event with the whole response.
      let done = null;
      for await (const event of postEventStream("generate", body, controller.signal)) {
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
    if (!special && run.tokens && joiner(state)) output.append(joiner(state));
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
