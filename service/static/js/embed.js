// Panel 3, embed: POST embed (normalize: true) ─▶ each text's vector ─▶ cosine-similarity matrix.
//
// The service sends unit vectors, so a cosine is a dot product. Each cell is shaded by its cosine
// (0 or less: no shade, 1: full) and carries the exact figure in data-cos and its title.

import { postJSON } from "./api.js";
import { $, clearError, el, showError, submitOnCtrlEnter } from "./dom.js";
import { fmt } from "./format.js";
import { onModelChange, withModel } from "./state.js";

const LABEL_CHARS = 14; // a text longer than this is cut in the row labels (the title has it whole)

/** Wire up the panel; returns run(), which embeds the texts now. */
export function setupEmbed(state) {
  const form = $("#embed-form");
  const errorBox = $("#embed-error");
  const textsBox = $("#embed-texts");
  const table = $("#embed-matrix");
  let controller = null;

  async function run() {
    controller?.abort();
    controller = new AbortController();
    const texts = textsBox.value.split(/\r?\n/).filter((line) => line.trim() !== "");
    const body = withModel(state, { texts, pooling: $("#embed-pooling").value, normalize: true });
    $("#embed-start").disabled = true;
    try {
      const data = await postJSON("embed", body, controller.signal);
      clearError(form, errorBox);
      render(texts, data);
    } catch (err) {
      if (err.name === "AbortError") return;
      showError(form, errorBox, err);
    } finally {
      $("#embed-start").disabled = false;
    }
  }

  function render(texts, data) {
    const vectors = data.embeddings ?? [];
    const label = (i) => {
      const text = texts[i];
      const cut = text.length > LABEL_CHARS ? `${text.slice(0, LABEL_CHARS)}…` : text;
      return el("th", { scope: "row", class: "cand", title: `${i + 1}. ${text} (${data.tokens[i]} tokens)` },
        el("span", { class: "muted" }, `${i + 1} `), cut);
    };
    const head = el("tr", {}, el("th", { scope: "col" }, ""),
      ...vectors.map((_, j) => el("th", { scope: "col", class: "num", title: texts[j] }, String(j + 1))));
    const rows = vectors.map((a, i) => el("tr", { dataset: { index: String(i) } }, label(i),
      ...vectors.map((b, j) => {
        const cos = dot(a, b);
        return el("td", {
          class: i === j ? "num self" : "num",
          dataset: { cos: String(cos) },
          style: `--sim: ${Math.max(0, Math.min(1, cos)).toFixed(3)}`,
          title: `${JSON.stringify(texts[i])} · ${JSON.stringify(texts[j])}: cosine ${fmt(cos, 4)}`,
        }, fmt(cos, 3));
      })));
    table.querySelector("thead").replaceChildren(head);
    $("#embed-rows").replaceChildren(...rows);
    table.hidden = rows.length === 0;
    $("#embed-placeholder").hidden = rows.length > 0;
    const stats = $("#embed-stats");
    stats.dataset.dim = String(data.dim);
    stats.replaceChildren(`${vectors.length} text${vectors.length === 1 ? "" : "s"} · `,
      el("strong", {}, `${data.dim}`), ` dimensions · pooling ${data.pooling}`);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  submitOnCtrlEnter(textsBox, form);
  $("#embed-pooling").addEventListener("change", () => {
    if (!table.hidden) run();
  });
  onModelChange(state, () => {
    if (!table.hidden) run();
  });
  return run;
}

/** The dot product of two vectors of one length (the cosine, for unit vectors). */
export function dot(a, b) {
  let sum = 0;
  for (let k = 0; k < a.length; k++) sum += a[k] * b[k];
  return sum;
}
