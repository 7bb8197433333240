// Panel 3, rerank: POST score (per_token: true) ─▶ ranked table + per-token heat map.

import { compact, postJSON } from "./api.js";
import { $, clearError, el, heatToken, showError, submitOnCtrlEnter, tokenInspector } from "./dom.js";
import { displayToken, fmt, isSpecial } from "./format.js";
import { joiner, onModelChange, withModel } from "./state.js";

/** Wire up the panel; returns run(), which scores the candidates now. */
export function setupRerank(state) {
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
    const body = withModel(state, compact({
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
      if (i && !special && joiner(state)) cell.append(joiner(state));
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
  onModelChange(state, () => {
    if (!table.hidden) run();
  });
  return run;
}
