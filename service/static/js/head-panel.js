// What the task heads' panels share (Tag, Classify): the heads of one kind GET models listed, the tab
// shown only when one is served, and a picker of them shown when several are.

import { $, el } from "./dom.js";

/** The served heads of `kind` for the panel `prefix` (#tab-PREFIX, #PREFIX-picker, #PREFIX-model). */
export function headsOfKind(state, kind, prefix) {
  const picker = $(`#${prefix}-model`);
  const served = () => state.heads.filter((h) => h.kind === kind);
  return {
    served,
    picker,
    /** The picked head (the first served when there is no choice), or undefined when none is. */
    chosen: () => served().find((h) => h.name === picker.value) ?? served()[0],
    /** The request's `model`: named only when there is a choice (the route's default otherwise). */
    named: (head) => (served().length > 1 ? { model: head.name } : {}),
    show() {
      const heads = served();
      $(`#tab-${prefix}`).hidden = heads.length === 0;
      $(`#${prefix}-picker`).hidden = heads.length < 2;
      picker.replaceChildren(...heads.map((h) => el("option", { value: h.name }, h.name)));
    },
  };
}
