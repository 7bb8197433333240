// DOM helpers shared by the panels: element building, form fields, errors shown in place,
// and heat-shaded tokens with their keyboard/hover inspector.

import { ApiError } from "./api.js";
import { fmt, fmtProb } from "./format.js";

const HEAT_FULL_NATS = 10; // a token with this surprisal (p ≈ 4.5e-5) gets the hottest colour

export const $ = (selector) => document.querySelector(selector);

export function el(tag, props = {}, ...children) {
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

// -- form fields ----------------------------------------------------------------------------
/**
 * Read a number input. Empty means "use the service's default" (the field is left out);
 * anything else is sent as typed, so the service's own validation decides and explains.
 */
export function numberField(input) {
  if (input.value.trim() === "") {
    if (input.validity.badInput) {
      throw new ApiError(`${input.labels[0].textContent}: not a number`, input.dataset.field);
    }
    return undefined;
  }
  return Number(input.value);
}

export function submitOnCtrlEnter(textarea, form) {
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
}

// -- errors shown in place ----------------------------------------------------------------
export function showError(form, box, err) {
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

export function clearError(form, box) {
  box.hidden = true;
  box.replaceChildren();
  for (const input of form.querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
    input.removeAttribute("aria-describedby");
  }
}

// -- heat-shaded tokens ---------------------------------------------------------------------
/** A span shaded by the token's surprisal, with the exact figures on hover (title). */
export function heatToken(text, logprob, { special = false } = {}) {
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
export function tokenInspector(container, readout) {
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
