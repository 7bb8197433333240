"""Linear interpolation of two language models, itself a language model.

::

    P(w | h) = λ · P_a(w | h) + (1 - λ) · P_b(w | h)          (per token, same vocabulary)

The classic pairing is an RNN with a Kneser-Ney 5-gram: the two make different mistakes, so the
mixture beats both. λ is tuned on the valid split by maximizing its log-likelihood, which only
needs each model's per-token log-probs once: the objective Σ log(λ p_a + (1 - λ) p_b) is concave
in λ, so a golden-section search finds its maximum in a few dozen cheap evaluations.

A mixture checkpoint is a directory that points at its two components::

    mixture/config.json   {"model_type": "mixture", "components": ["../rnn", "../kn5"], "lambda": 0.62,
                           "component_sha256": [sha256 of each component's config.json]}

so the components are stored once; if either changes after tuning, loading refuses (λ is stale).

**Per token or per sentence.** The interpolation above (``mode: "token"``) mixes each next-token
distribution with the same λ. With ``mode: "sentence"`` the weights follow the sentence read so
far, as a posterior over the two models (Bayesian interpolation)::

    P(w_t | h) = π_a(h) · P_a(w_t | h) + π_b(h) · P_b(w_t | h),   π_a(h) ∝ λ · P_a(h),  π_b(h) ∝ (1-λ) · P_b(h)

so a whole sentence gets exactly λ·P_a(s) + (1-λ)·P_b(s). A sentence that only one model knows
costs -ln λ once, not once per token: an adapted model made of ``sentence(base, domain)`` keeps
the base's perplexity on the base's text within a few percent (:mod:`model.training.adapt`).

**Opening the components.** They may be of any kind, mixtures included, so they are opened by the
loader the caller passes in (``open_model``: :func:`model.models.loading.load_model`, which passes
itself). A mixture of mixtures thus recurses through the loader without this module importing
it: loading.py knows mixture.py, never the reverse.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from model.models.checkpoint import (
    CONFIG,
    FORMAT_VERSION,
    METRICS,
    CheckpointError,
    read_config,
    read_json,
    write_dir_atomically,
    write_json,
    write_shared_files,
)
from model.models.lm import LanguageModel, State
from model.text.batching import with_boundaries
from model.text.data import sha256_file
from model.text.tokenizer import Tokenizer

OpenModel = Callable[[Path, str], LanguageModel]  # a checkpoint directory and a device -> its model

MODES = ("token", "sentence")


class MixtureLanguageModel(LanguageModel):
    kind = "mixture"

    def __init__(
        self,
        a: LanguageModel,
        b: LanguageModel,
        lam: float,
        names: Sequence[str] = ("a", "b"),
        mode: str = "token",
    ):
        if a.tokenizer.tokens != b.tokenizer.tokens or a.tokenizer.kind != b.tokenizer.kind:
            raise ValueError("mixture components must share one vocabulary (the same tokenizer)")
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lambda must be in [0, 1], got {lam}")
        if mode not in MODES:
            raise ValueError(f"mixture mode must be one of {MODES}, got {mode!r}")
        self.a, self.b, self.lam, self.mode = a, b, float(lam), mode
        self.names = list(names)
        self.tokenizer = a.tokenizer
        self.metrics: dict = {}

    def _mix(self, logp_a: Tensor, logp_b: Tensor) -> Tensor:
        """log(λ e^a + (1-λ) e^b), safe for λ in {0, 1} and for -inf entries."""
        log_lam = math.log(self.lam) if self.lam > 0 else -math.inf
        log_rest = math.log1p(-self.lam) if self.lam < 1 else -math.inf
        logp_b = logp_b.to(device=logp_a.device, dtype=logp_a.dtype)
        return torch.logaddexp(logp_a + log_lam, logp_b + log_rest)

    def _prior(self) -> Tensor:
        """(1, 2) ln λ, ln (1-λ)."""
        with np.errstate(divide="ignore"):
            return torch.tensor([[np.log(self.lam), np.log1p(-self.lam)]], dtype=torch.float64)

    def _mix_weighted(self, log_w: Tensor, logp_a: Tensor, logp_b: Tensor) -> Tensor:
        """Σ_m π_m P_m for rows with log-weights ``log_w`` (B, 2) (each row sums to one)."""
        logp_b = logp_b.to(device=logp_a.device, dtype=logp_a.dtype)
        w = log_w.to(device=logp_a.device, dtype=logp_a.dtype)
        return torch.logaddexp(w[:, :1] + logp_a, w[:, 1:] + logp_b)

    def sequence_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[Tensor]:
        pairs = zip(self.a.sequence_logprobs(seqs), self.b.sequence_logprobs(seqs), strict=True)
        if self.mode == "token":
            return [self._mix(la.double().cpu(), lb.double().cpu()) for la, lb in pairs]
        out = []
        for la, lb in pairs:
            la, lb = la.double().cpu(), lb.double().cpu()
            # the log-weights before each token: the prior times the likelihood of the tokens before it
            seen = torch.stack([torch.cumsum(la, 0) - la, torch.cumsum(lb, 0) - lb], dim=1)  # (T, 2)
            out.append(self._mix_weighted(_normalized(self._prior() + seen), la[:, None], lb[:, None])[:, 0])
        return out

    # A sentence mixture's state carries each row's log-weights and the two distributions of the
    # last step, from which the next fed token updates the weights.
    def start_state(self, batch_size: int) -> State:
        state = (self.a.start_state(batch_size), self.b.start_state(batch_size))
        if self.mode == "token":
            return state
        return (*state, self._prior().expand(batch_size, 2).clone(), None, None)

    def step(self, state: State, ids: Tensor) -> tuple[Tensor, State]:
        logp_a, state_a = self.a.step(state[0], ids)
        logp_b, state_b = self.b.step(state[1], ids)
        if self.mode == "token":
            return self._mix(logp_a, logp_b), (state_a, state_b)
        log_w, last_a, last_b = state[2], state[3], state[4]
        if last_a is not None:  # the fed tokens, as each model predicted them: the posterior moves
            idx = ids.view(-1, 1).to(last_a.device)
            seen = torch.cat(
                [
                    last_a.gather(1, idx).double().cpu(),
                    last_b.gather(1, idx.to(last_b.device)).double().cpu(),
                ],
                1,
            )
            log_w = _normalized(log_w + seen)
        return self._mix_weighted(log_w, logp_a, logp_b), (state_a, state_b, log_w, logp_a, logp_b)

    def _prefill_equal(self, prefixes: Sequence[Sequence[int]]) -> tuple[Tensor, State]:
        logp_a, state_a = self.a.prefill(prefixes)
        logp_b, state_b = self.b.prefill(prefixes)
        if self.mode == "token":
            return self._mix(logp_a, logp_b), (state_a, state_b)
        seen = [
            [float(x.sum()) for x in m.sequence_logprobs([list(p) for p in prefixes])]
            for m in (self.a, self.b)
        ]
        log_w = _normalized(self._prior() + torch.tensor(seen, dtype=torch.float64).T)
        return self._mix_weighted(log_w, logp_a, logp_b), (state_a, state_b, log_w, logp_a, logp_b)

    def select_state(self, state: State, rows: Sequence[int] | Tensor) -> State:
        picked = (self.a.select_state(state[0], rows), self.b.select_state(state[1], rows))
        if self.mode == "token":
            return picked
        index = torch.as_tensor(rows, dtype=torch.long)
        extra = [None if t is None else t.index_select(0, index.to(t.device)) for t in state[2:]]
        return (*picked, *extra)

    def concat_states(self, states: Sequence[State]) -> State:
        joined = (self.a.concat_states([s[0] for s in states]), self.b.concat_states([s[1] for s in states]))
        if self.mode == "token":
            return joined
        extra: list[Tensor | None] = []
        for k in (2, 3, 4):
            parts = [s[k] for s in states]
            if any(p is None for p in parts):  # a row that has not stepped yet: no last distribution
                if k == 2 or not all(p is None for p in parts):
                    raise ValueError("sentence-mixture states must all have stepped, or none")
                extra.append(None)
            else:
                extra.append(torch.cat(parts, 0))
        return (*joined, *extra)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "lambda": self.lam,
            "mode": self.mode,
            "components": self.names,
            "a": self.a.describe(),
            "b": self.b.describe(),
        }


# -- tuning λ -------------------------------------------------------------------------------------
def _normalized(log_w: Tensor) -> Tensor:
    """Log-weights that sum to one per row (a row both models call impossible keeps its prior)."""
    norm = torch.logsumexp(log_w, dim=1, keepdim=True)
    return torch.where(torch.isfinite(norm), log_w - norm, torch.full_like(log_w, -math.log(2)))


def token_logprobs(lm: LanguageModel, lines: Sequence[str], batch_lines: int = 256) -> np.ndarray:
    """Every per-token log-prob of ``lines`` scored the evaluation way (<bos> … <eos>), flattened."""
    out = []
    for start in range(0, len(lines), batch_lines):
        seqs = [with_boundaries(lm.tokenizer.encode(line).ids) for line in lines[start : start + batch_lines]]
        out += [s.double().cpu().numpy() for s in lm.sequence_logprobs(seqs)]
    return np.concatenate(out) if out else np.zeros(0)


def mixture_loglik(lam: float, logp_a: np.ndarray, logp_b: np.ndarray) -> float:
    """Σ_t log(λ p_a(t) + (1-λ) p_b(t))."""
    with np.errstate(divide="ignore"):
        return float(np.logaddexp(logp_a + np.log(lam), logp_b + np.log1p(-lam)).sum())


def tune_lambda(logp_a: np.ndarray, logp_b: np.ndarray, tol: float = 1e-5) -> float:
    """The λ in [0, 1] maximizing :func:`mixture_loglik` (golden-section search: it is concave)."""
    if len(logp_a) != len(logp_b):
        raise ValueError("the two models scored different numbers of tokens")
    inv_phi = (math.sqrt(5) - 1) / 2
    lo, hi = 0.0, 1.0
    x1, x2 = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
    f1, f2 = mixture_loglik(x1, logp_a, logp_b), mixture_loglik(x2, logp_a, logp_b)
    while hi - lo > tol:
        if f1 < f2:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + inv_phi * (hi - lo)
            f2 = mixture_loglik(x2, logp_a, logp_b)
        else:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - inv_phi * (hi - lo)
            f1 = mixture_loglik(x1, logp_a, logp_b)
    best = (lo + hi) / 2
    # the optimum may sit on an end: one model alone
    return max((0.0, best, 1.0), key=lambda lam: mixture_loglik(lam, logp_a, logp_b))


# -- checkpoints ----------------------------------------------------------------------------------
def save_mixture(
    out_dir: str | Path,
    components: Sequence[str | Path],
    mixture: MixtureLanguageModel,
    metrics: dict | None = None,
    card: str | None = None,
) -> Path:
    """Write a mixture checkpoint that refers to its components by paths relative to ``out_dir``."""
    out = Path(out_dir).resolve()
    return write_dir_atomically(out, lambda d: mixture_files(d, components, mixture, metrics, card, at=out))


def mixture_files(
    d: Path,
    components: Sequence[str | Path],
    mixture: MixtureLanguageModel,
    metrics: dict | None = None,
    card: str | None = None,
    at: Path | None = None,
) -> None:
    """The mixture's files in directory ``d``, its components named relative to ``at`` (where
    ``d`` will be; default ``d`` itself)."""
    where = (at or d).resolve()
    write_json(
        d / CONFIG,
        {
            "format_version": FORMAT_VERSION,
            "model_type": "mixture",
            "components": [os.path.relpath(Path(c).resolve(), where) for c in components],
            "lambda": mixture.lam,
            **({"mode": mixture.mode} if mixture.mode != "token" else {}),
            "component_sha256": [sha256_file(Path(c) / CONFIG) for c in components],
        },
    )
    write_shared_files(d, mixture.tokenizer, metrics, card)


def load_mixture(
    model_dir: str | Path, device: str = "cpu", *, open_model: OpenModel
) -> MixtureLanguageModel:
    """The mixture stored in ``model_dir``, its components opened with ``open_model`` (any kind,
    mixtures included: :func:`model.models.loading.load_model`)."""
    d = Path(model_dir)
    config = read_config(d)
    if config["model_type"] != "mixture":
        raise CheckpointError(f"{d / CONFIG}: model_type is {config['model_type']!r}, not 'mixture'")
    try:
        rel, lam = list(config["components"]), float(config["lambda"])
        mode = str(config.get("mode", "token"))
        shas = list(config["component_sha256"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{d / CONFIG}: needs 'components', 'lambda' and 'component_sha256' ({e})"
        ) from e
    if len(rel) != 2 or len(shas) != 2:
        raise CheckpointError(f"{d / CONFIG}: a mixture has exactly two components")
    paths = [(d / r).resolve() for r in rel]
    for path, sha in zip(paths, shas, strict=True):
        if path == d.resolve():
            raise CheckpointError(f"{d / CONFIG}: a mixture cannot contain itself")
        if not (path / CONFIG).exists():
            raise CheckpointError(f"{d / CONFIG}: component {path} is missing")
        if sha256_file(path / CONFIG) != sha:
            raise CheckpointError(
                f"{path / CONFIG}: changed since the mixture was tuned (sha256 differs); re-run `rnnlm mix`"
            )
    try:
        lm = MixtureLanguageModel(
            open_model(paths[0], device),
            open_model(paths[1], device),
            lam,
            names=[str(r) for r in rel],
            mode=mode,
        )
    except ValueError as e:
        raise CheckpointError(f"{d}: {e}") from e
    lm.metrics = read_json(d / METRICS) if (d / METRICS).exists() else {}
    return lm


# -- `rnnlm mix` ---------------------------------------------------------------------------------
def mix_models(
    model_a: str | Path,
    model_b: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    lam: float | None = None,
    device: str = "cpu",
    command: str = "",
    log=print,
    *,
    open_model: OpenModel,
) -> dict:
    """Tune λ on valid (unless given), evaluate a, b and the mixture on valid/test, save it.

    Each component scores each split once; λ, the mixture's and the components' figures all come
    from those per-token log-probs. ``open_model`` opens the two (as :func:`load_mixture`).
    """
    from model.text.data import corpus_checksums, load_split

    a, b = open_model(Path(model_a), device), open_model(Path(model_b), device)
    mixture = MixtureLanguageModel(a, b, 0.5 if lam is None else lam, names=[str(model_a), str(model_b)])
    splits = {split: load_split(data_dir, split) for split in ("valid", "test")}
    scores = {split: (token_logprobs(a, lines), token_logprobs(b, lines)) for split, lines in splits.items()}
    metrics: dict = {
        "model_type": "mixture",
        "components": [str(model_a), str(model_b)],
        "command": command,
        "data": {"dir": str(data_dir), "sha256": corpus_checksums(data_dir)},
    }
    if lam is None:
        mixture.lam = tune_lambda(*scores["valid"])
        metrics["tuned_on"] = {"split": "valid", "tokens": len(scores["valid"][0])}
        log(f"lambda = {mixture.lam:.4f} (tuned on {len(scores['valid'][0])} valid tokens)")
    metrics["lambda"] = mixture.lam
    for split, lines in splits.items():
        logp_a, logp_b = scores[split]
        mixed = mixture._mix(torch.from_numpy(logp_a), torch.from_numpy(logp_b)).numpy()
        metrics[split] = summarize(mixed, lines, mixture.tokenizer)
        metrics["components_" + split] = [
            summarize(x, lines, mixture.tokenizer)["perplexity"] for x in (logp_a, logp_b)
        ]
        log(
            f"{split}: mixture {metrics[split]['perplexity']:.2f}  a {metrics['components_' + split][0]:.2f}"
            f"  b {metrics['components_' + split][1]:.2f}"
        )
    mixture.metrics = metrics
    save_mixture(out_dir, [model_a, model_b], mixture, metrics, render_mixture_card(out_dir, metrics))
    return metrics


def summarize(logp: np.ndarray, lines: Sequence[str], tokenizer: Tokenizer) -> dict:
    """The figures :func:`model.models.evaluate.evaluate_lines` reports, from per-token log-probs."""
    from model.models.evaluate import figures

    oov = sum(tokenizer.encode(line).oov for line in lines)
    return figures(float(logp.sum()), len(logp), len(lines), oov, sum(len(line) + 1 for line in lines))


def render_mixture_card(out_dir: str | Path, metrics: dict) -> str:
    a, b = metrics["components"]
    rows = "\n".join(
        f"| {s} | {metrics[s]['perplexity']:.2f} | {metrics['components_' + s][0]:.2f} "
        f"| {metrics['components_' + s][1]:.2f} |"
        for s in ("valid", "test")
    )
    return f"""# Model card: {Path(out_dir).name}

A per-token linear interpolation of two language models over one vocabulary:
P = λ · P_a + (1 − λ) · P_b with λ = {metrics["lambda"]:.4f}
({"tuned on valid" if "tuned_on" in metrics else "given"}).

- a: `{a}`
- b: `{b}`

The components are loaded from their own checkpoint directories (paths in `config.json`,
relative to this one); loading refuses if either changed since λ was chosen.

## Command
```
{metrics.get("command", "")}
```

## Results (perplexity per sentence, `<eos>` counted, OOVs included)

| split | mixture | a | b |
|---|---|---|---|
{rows}
"""
