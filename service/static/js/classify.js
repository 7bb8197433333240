// Panel 5, classify: POST classify ─▶ each text's label and probabilities ─▶ a row per text with its
// label and a bar per label.
//
// Shown only when GET models lists a classifier among its heads (show(), head-panel.js). Each text
// gets its most probable label and one bar per label of the classifier, as long as its probability.

import { postJSON } from "./api.js";
import { $, clearError, el, showError, submitOnCtrlEnter } from "./dom.js";
import { headsOfKind } from "./head-panel.js";

/** Wire up the panel; returns {show, run}: show() reveals the tab when a classifier is served, run() classifies now. */
export function setupClassify(state) {
  const form = $("#classify-form");
  const errorBox = $("#classify-error");
  const textsBox = $("#classify-texts");
  const classifiers = headsOfKind(state, "classifier", "classify");
  const { picker, show } = classifiers;
  let controller = null;

  async function run() {
    const classifier = classifiers.chosen();
    if (!classifier) return;
    controller?.abort();
    controller = new AbortController();
    const texts = textsBox.value.split(/\r?\n/).filter((line) => line.trim() !== "");
    const body = { texts, ...classifiers.named(classifier) };
    $("#classify-start").disabled = true;
    try {
      const data = await postJSON("classify", body, controller.signal);
      clearError(form, errorBox);
      render(texts, data);
    } catch (err) {
      if (err.name === "AbortError") return;
      showError(form, errorBox, err);
    } finally {
      $("#classify-start").disabled = false;
    }
  }

  function render(texts, data) {
    const rows = data.results.map((result, i) => {
      const bars = Object.entries(result.probabilities).map(([label, p]) =>
        el("div", { class: "class-bar", dataset: { label, probability: String(p) } },
          el("span", { class: "class-name" }, label),
          el("span", { class: "class-track" },
            el("span", { class: "class-fill", style: `width: ${(p * 100).toFixed(1)}%` })),
          el("span", { class: "class-p" }, `${(p * 100).toFixed(1)}%`)));
      return el("li", { class: "classified", dataset: { index: String(i), label: result.label } },
        el("p", { class: "classified-text" }, texts[i]),
        el("p", { class: "classified-label" }, el("strong", {}, result.label),
          ` · ${(result.probability * 100).toFixed(1)}%`),
        el("div", { class: "class-bars" }, ...bars));
    });
    $("#classify-rows").replaceChildren(...rows);
    $("#classify-placeholder").hidden = rows.length > 0;
    const stats = $("#classify-stats");
    stats.dataset.texts = String(rows.length);
    stats.replaceChildren(`${rows.length} text${rows.length === 1 ? "" : "s"} · classifier ${data.model}`);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  submitOnCtrlEnter(textsBox, form);
  picker.addEventListener("change", () => {
    if ($("#classify-rows").children.length) run();
  });
  return { show, run };
}
