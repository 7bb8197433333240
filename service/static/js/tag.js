// Panel 4, tag: POST tag ─▶ each text's words with their part-of-speech tags ─▶ words coloured by tag.
//
// Shown only when GET models lists a tagger among its heads (show()). Each word is a chip coloured
// by its tag (one hue per tag of the tagger's tag set, so a tag keeps its colour from text to text),
// with the tag under it and, on hover or focus, the tag's meaning and the word's span. Whitespace
// between words (the service splits words there) is kept as a gap.

import { postJSON } from "./api.js";
import { $, clearError, el, showError, submitOnCtrlEnter } from "./dom.js";
import { headsOfKind } from "./head-panel.js";

// The People's Daily (PKU) tag set, the pd98 tagger's: what each tag means (others show as they are)
export const TAG_NAMES = {
  a: "adjective", ad: "adjective as adverb", an: "adjective as noun", b: "distinguishing word",
  c: "conjunction", d: "adverb", e: "interjection", f: "locative", h: "prefix", i: "idiom",
  j: "abbreviation", k: "suffix", l: "fixed expression", m: "numeral", n: "noun", nr: "person name",
  ns: "place name", nt: "organization", nx: "foreign word", nz: "other proper noun", o: "onomatopoeia",
  p: "preposition", q: "measure word", r: "pronoun", s: "place word", t: "time word", u: "auxiliary",
  v: "verb", vd: "verb as adverb", vn: "verb as noun", w: "punctuation", y: "modal particle",
  z: "descriptive word",
};

/** The tag's hue: its place in the tagger's tag set, spread by the golden angle. */
export function tagHue(tag, tags) {
  const i = tags.indexOf(tag);
  return Math.round(((i < 0 ? tags.length : i) * 137.508) % 360);
}

export function describeTag(tag) {
  return TAG_NAMES[tag] ? `${tag}: ${TAG_NAMES[tag]}` : tag;
}

/** Wire up the panel; returns {show, run}: show() reveals the tab when a tagger is served, run() tags now. */
export function setupTag(state) {
  const form = $("#tag-form");
  const errorBox = $("#tag-error");
  const textsBox = $("#tag-texts");
  const taggers = headsOfKind(state, "tagger", "tag");
  const { picker, show } = taggers;
  let controller = null;

  async function run() {
    const tagger = taggers.chosen();
    if (!tagger) return;
    controller?.abort();
    controller = new AbortController();
    const texts = textsBox.value.split(/\r?\n/).filter((line) => line.trim() !== "");
    const body = { texts, ...taggers.named(tagger) };
    $("#tag-start").disabled = true;
    try {
      const data = await postJSON("tag", body, controller.signal);
      clearError(form, errorBox);
      render(texts, data, tagger.classes ?? []);
    } catch (err) {
      if (err.name === "AbortError") return;
      showError(form, errorBox, err);
    } finally {
      $("#tag-start").disabled = false;
    }
  }

  function render(texts, data, tags) {
    const seen = new Set();
    const rows = data.results.map((result, i) => {
      const text = texts[i];
      const parts = [];
      let at = 0;
      for (const w of result.words) {
        if (w.start > at) parts.push(el("span", { class: "tag-gap" }, text.slice(at, w.start)));
        seen.add(w.tag);
        parts.push(el("span", {
          class: "tag-word",
          tabIndex: 0,
          dataset: { tag: w.tag, start: String(w.start), end: String(w.end) },
          style: `--tag-hue: ${tagHue(w.tag, tags)}`,
          title: `${w.word} · ${describeTag(w.tag)} · characters ${w.start}–${w.end}`,
        }, el("span", { class: "tag-text" }, w.word), el("span", { class: "tag-name" }, w.tag)));
        at = w.end;
      }
      return el("li", { class: "tagged-text", dataset: { index: String(i) } }, ...parts);
    });
    $("#tag-rows").replaceChildren(...rows);
    $("#tag-placeholder").hidden = rows.length > 0;
    const words = data.results.reduce((n, r) => n + r.words.length, 0);
    const stats = $("#tag-stats");
    stats.dataset.words = String(words);
    stats.replaceChildren(`${rows.length} text${rows.length === 1 ? "" : "s"} · `,
      el("strong", {}, String(words)), ` words · tagger ${data.model}`);
    const shown = tags.filter((t) => seen.has(t)).concat([...seen].filter((t) => !tags.includes(t)));
    $("#tag-legend").replaceChildren(...shown.map((t) =>
      el("span", { class: "tag-key", style: `--tag-hue: ${tagHue(t, tags)}` }, describeTag(t))));
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  submitOnCtrlEnter(textsBox, form);
  picker.addEventListener("change", () => {
    if ($("#tag-rows").children.length) run();
  });
  return { show, run };
}
