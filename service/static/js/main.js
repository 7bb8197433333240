// rnnlm playground: six panels over the service's own JSON API (the same calls as /docs).
//
//   Next token  ─ POST next-token  (debounced as you type)  ─▶ bar chart + entropy    next-token.js
//   Generate    ─ POST generate    (stream: true, SSE read through fetch) ─▶ heat-shaded tokens  generate.js
//   Embed       ─ POST embed       (normalize: true) ─▶ cosine-similarity matrix of the texts  embed.js
//   Tag         ─ POST tag         (shown when a tagger is served) ─▶ words coloured by tag  tag.js
//   Classify    ─ POST classify    (shown when a classifier is served) ─▶ label + bars  classify.js
//   Rerank      ─ POST score       (per_token: true) ─▶ ranked table + per-token heat map      rerank.js
//   header      ─ GET  models      ─▶ model picker (when several are served) + summary        models.js
//
// Native ES modules, no build step, no dependencies, nothing fetched from outside the service:
// api.js talks to the service, format.js formats numbers and tokens, dom.js holds the shared
// DOM helpers, tabs.js the tab strip. The only shared state is the object createState() makes
// here, handed to each panel explicitly. URLs are relative, so the page also works behind a
// reverse proxy under a sub-path (module imports resolve against this file's URL).

import { setupClassify } from "./classify.js";
import { $ } from "./dom.js";
import { setupEmbed } from "./embed.js";
import { setupGenerate } from "./generate.js";
import { loadModels, renderModels, setupModels } from "./models.js";
import { setupNextToken } from "./next-token.js";
import { setupRerank } from "./rerank.js";
import { setupTag } from "./tag.js";
import { createState, setModels } from "./state.js";
import { setupTabs } from "./tabs.js";

async function main() {
  const state = createState();
  setupModels(state);
  const updateNext = setupNextToken(state);
  setupGenerate(state);
  const embed = setupEmbed(state);
  const rerank = setupRerank(state);
  const tag = setupTag(state);
  const classify = setupClassify(state);
  const ready = loadModels().then(({ models, heads }) => {
    setModels(state, models, heads);
    renderModels(state);
    tag.show(); // the Tag tab, when a tagger is served
    classify.show(); // the Classify tab, when a classifier is served
  });
  const firstOpen = new Map([
    ["panel-embed", () => ready.then(embed)], // first visit: the example texts, compared
    ["panel-tag", () => ready.then(tag.run)], // first visit: the example texts, tagged
    ["panel-classify", () => ready.then(classify.run)], // first visit: the example texts, labelled
    ["panel-rerank", () => ready.then(rerank)], // first visit: the homophones, ranked
  ]);
  const select = setupTabs(firstOpen);
  await ready;
  const fromHash = $(`#tab-${CSS.escape(location.hash.slice(1))}`);
  if (fromHash?.hidden === false && fromHash.getAttribute("aria-selected") !== "true") select(fromHash);
  updateNext();
}

main();
