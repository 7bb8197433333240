// The header: the model picker (shown when several models are served) and the model summary.

import { getModels } from "./api.js";
import { $, el } from "./dom.js";
import { fmtCount } from "./format.js";
import { chooseModel, currentModel, notifyModelChange } from "./state.js";

/** GET /models until the service has loaded (503 means "still loading"): {models, heads}, both [] on failure. */
export async function loadModels() {
  const errorBox = $("#models-error");
  for (let attempt = 0; ; attempt++) {
    try {
      const answer = await getModels();
      if (answer.loading) {
        // still loading the checkpoint: say so and try again shortly
        renderSummaryMessage("loading the model…");
        await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 4000)));
        continue;
      }
      errorBox.hidden = true;
      return { models: answer.models, heads: answer.heads };
    } catch (err) {
      errorBox.textContent = `Could not list the models: ${err.message}`;
      errorBox.hidden = false;
      renderSummaryMessage("unavailable");
      return { models: [], heads: [] };
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

/** Draw the picker and the summary from `state` (the models and the chosen one). */
export function renderModels(state) {
  const picker = $("#model-picker");
  const select = $("#model-select");
  picker.hidden = state.models.length < 2;
  select.replaceChildren(...state.models.map((m) => el("option", { value: m.name }, m.name)));
  if (state.model) select.value = state.model;
  const model = currentModel(state);
  if (!model) return;
  const facts = modelFacts(model).filter(([label]) => label !== "Model" || picker.hidden);
  $("#model-summary").replaceChildren(
    ...facts.map(([label, value]) => el("div", {}, el("dt", {}, label), el("dd", {}, String(value)))),
  );
}

/** Picking another model redraws the header, then tells the panels (state's model listeners). */
export function setupModels(state) {
  $("#model-select").addEventListener("change", (event) => {
    chooseModel(state, event.target.value);
    renderModels(state);
    notifyModelChange(state);
  });
}
