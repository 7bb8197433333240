// Talking to the service: JSON POSTs, the model list, server-sent events, and its error bodies.
// URLs are relative, so the page also works behind a reverse proxy under a sub-path.

export class ApiError extends Error {
  constructor(message, field, status) {
    super(message);
    this.name = "ApiError";
    this.field = field; // the request field the service blames, e.g. "top_k" (or null)
    this.status = status;
  }
}

/** Read the service's error body, {"error": {"type", "message", "field", "status"}}, into an ApiError. */
export async function apiErrorFrom(response) {
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    // not JSON (a proxy in between?): fall back to the status line
  }
  return errorFromPayload(payload, response.status, response.statusText);
}

export function errorFromPayload(payload, status = 0, statusText = "") {
  const error = payload?.error;
  if (error?.message) return new ApiError(error.message, error.field ?? null, error.status ?? status);
  return new ApiError(`The service answered ${status} ${statusText}`.trim(), null, status);
}

export async function postJSON(path, body, signal) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await apiErrorFrom(response);
  return response.json();
}

/**
 * POST a JSON body and read the answer as server-sent events (EventSource cannot POST).
 * Yields {event, data}; an error status is thrown as an ApiError before anything is yielded.
 */
export async function* postEventStream(path, body, signal) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await apiErrorFrom(response);
  yield* readServerSentEvents(response.body);
}

/**
 * GET models: {loading: false, models, heads} with the served models' and task heads' lists, or {loading: true} while
 * the service is still loading its checkpoint (503: ask again shortly). Any other failure is
 * thrown as an ApiError.
 */
export async function getModels() {
  const response = await fetch("models", { headers: { Accept: "application/json" } });
  if (response.status === 503) return { loading: true };
  if (!response.ok) throw await apiErrorFrom(response);
  const payload = await response.json();
  return { loading: false, models: payload.models, heads: payload.heads ?? [] };
}

/** Server-sent events from a fetch() body. Yields {event, data}. */
export async function* readServerSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = /\r\n\r\n|\n\n|\r\r/.exec(buffer))) {
        const event = parseEventBlock(buffer.slice(0, end.index));
        buffer = buffer.slice(end.index + end[0].length);
        if (event) yield event;
      }
    }
    const last = parseEventBlock(buffer);
    if (last) yield last;
  } finally {
    reader.releaseLock();
  }
}

export function parseEventBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split(/\r\n|\r|\n/)) {
    if (!line || line.startsWith(":")) continue; // blank or comment (keep-alive ping)
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "event") event = value;
    else if (name === "data") data.push(value);
  }
  return data.length ? { event, data: data.join("\n") } : null;
}

/** The request body without the fields left undefined (the service's defaults apply). */
export function compact(body) {
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined));
}
