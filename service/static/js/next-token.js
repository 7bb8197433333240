// Panel 1, next token: POST next-token (debounced as you type) ─▶ bar chart + entropy.

import { compact, postJSON } from "./api.js";
import { $, clearError, el, numberField, showError, submitOnCtrlEnter } from "./dom.js";
import { displayToken, fmt, fmtPercent, fmtProb, isSpecial } from "./format.js";
import { joiner, onModelChange, withModel } from "./state.js";

const DEBOUNCE_MS = 250;

/** Wire up the panel; returns update(), which charts the current text now. */
export function setupNextToken(state) {
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
      const body = withModel(state, compact({ text: text.value, top_k: numberField(topK) }));
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

  /** One bar: a button that appends its token (specials such as <eos> are shown but inert). */
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
    const sep = text.value && joiner(state) ? joiner(state) : "";
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
  onModelChange(state, update);
  return update;
}
