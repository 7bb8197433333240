// Number and token formatting: pure functions, no DOM.

const MINUS = "\u2212";
// The API's names for the tokens that are not text, shown as they are (one name everywhere).
const SPECIALS = new Set(["<eos>", "<unk>", "<bos>", "<pad>"]);

/** Fixed digits with a real minus sign; "n/a" for a missing value, ∞ for an infinite one. */
export function fmt(x, digits = 2) {
  if (x === null || x === undefined || Number.isNaN(x)) return "n/a";
  if (!Number.isFinite(x)) return x > 0 ? "∞" : `${MINUS}∞`;
  const s = x.toFixed(digits);
  return s.startsWith("-") ? MINUS + s.slice(1) : s;
}

export function fmtProb(p) {
  if (p >= 0.001) return p.toFixed(4);
  return p.toExponential(2);
}

export function fmtPercent(p) {
  if (p >= 0.1) return `${(p * 100).toFixed(1)}%`;
  if (p >= 0.001) return `${(p * 100).toFixed(2)}%`;
  return `${(p * 100).toExponential(1)}%`;
}

export function fmtCount(n) {
  if (typeof n !== "number") return String(n);
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return n.toLocaleString("en");
}

/** A vocabulary entry that is not text (<eos>, <unk>, <bos>, <pad>). */
export function isSpecial(token) {
  return SPECIALS.has(token);
}

/** How a token is shown: specials by their API name (<eos>), invisible characters as visible symbols. */
export function displayToken(token) {
  if (isSpecial(token)) return token;
  if (token === " ") return "␠";
  if (token === "\n") return "⏎";
  if (token === "\t") return "⇥";
  return token;
}
