// The page's one piece of shared state: which models are served and which one is chosen.
// main.js creates it (createState) and hands it to each panel that needs it; no module keeps
// state of its own at module level.

export function createState() {
  return {
    models: [], // what GET /models returned, one object per served model
    model: null, // the chosen model's name (sent only when several are served)
    heads: [], // the task heads GET /models listed (a tagger: kind "tagger"), for their own panels
    modelListeners: [], // called (no arguments) after the user picks another model
  };
}

/** Store what GET /models returned and choose the default model. */
export function setModels(state, models, heads = []) {
  state.heads = heads;
  state.models = models;
  state.model = (models.find((m) => m.default) ?? models[0])?.name ?? null;
}

/** The user picked another model (notifyModelChange then tells the panels). */
export function chooseModel(state, name) {
  state.model = name;
}

/** Call `listener` (no arguments) each time the user picks another model. */
export function onModelChange(state, listener) {
  state.modelListeners.push(listener);
}

export function notifyModelChange(state) {
  for (const listener of state.modelListeners) listener();
}

/** The request body plus the chosen model, when there is a choice to make. */
export function withModel(state, body) {
  return state.models.length > 1 && state.model ? { ...body, model: state.model } : body;
}

export function currentModel(state) {
  return state.models.find((m) => m.name === state.model) ?? state.models[0] ?? null;
}

/** What goes between two tokens of decoded text: nothing for characters, a space for words. */
export function joiner(state) {
  return currentModel(state)?.tokenizer === "word" ? " " : "";
}
