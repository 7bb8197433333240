"""Generation throughput and latency: the engine's continuous batching at 1/8/32/64 concurrent
streams, against the naive loop a user would write (pytorch/examples word_language_model
generate.py: one request at a time, one token per forward call; for a model that is not a plain
RNN, the same loop over ``lm.step``), in the same run, for the served default model and the plain
LSTM (their ratio last).

Each stream is a client that sends seeded sampling requests (``max_new_tokens`` each, prompts of
a few characters of held-out text) back to back until the time is up; tokens/s counts generated
tokens of all streams over the wall-clock time. Time to first token runs from the request to its
first event (queueing + prefill + one choice); time per token is the mean gap between a stream's
later events.

    .venv/bin/python -m rnnlm.bench.generation            # the full run, updates docs/BENCHMARKS.md
    .venv/bin/python -m rnnlm.bench.generation --quick    # seconds: checks that it works
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

import torch

from model.inference.engine import Engine, EngineConfig
from model.inference.generation import GenerationRequest
from model.inference.sampling import SamplingParams
from model.models.lm import LanguageModel, RNNLanguageModel
from model.text.tokenizer import BOS_ID, EOS_ID

from .common import (
    BenchModel,
    base_parser,
    ceiling,
    clauses,
    command_line,
    flops_per_token,
    load_bench_models,
    mark,
    matmul_gflops,
    models_header,
    percentile,
    ratio_rows,
    resolve_out,
    table,
    write_section,
)


def prompts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pool = clauses(8, 30) or ["今天天气很好"]
    return [rng.choice(pool)[: rng.randint(2, 6)] for _ in range(count)]


def naive_tokens_per_s(lm: LanguageModel, texts: list[str], max_new_tokens: int, seconds: float) -> float:
    """pytorch/examples generate.py, one request after another (prompt fed token by token)."""
    if not isinstance(lm, RNNLanguageModel):
        return stepping_tokens_per_s(lm, texts, max_new_tokens, seconds)
    net, device = lm.net, lm.device
    with torch.no_grad():  # warm-up: the first calls set up kernels
        net(torch.tensor([[BOS_ID]], device=device), None)
    generated, t0, i = 0, time.perf_counter(), 0
    with torch.no_grad():
        while time.perf_counter() - t0 < seconds or i == 0:
            ids = [BOS_ID, *lm.tokenizer.encode(texts[i % len(texts)]).ids]
            torch.manual_seed(i)
            i += 1
            hidden = None
            inp = torch.tensor([[ids[0]]], device=device)
            for tok in ids[1:]:
                _, hidden, _ = net(inp, hidden)
                inp.fill_(tok)
            for _ in range(max_new_tokens):
                output, hidden, _ = net(inp, hidden)
                word_weights = output.squeeze().div(1.0).exp().cpu()
                word_idx = torch.multinomial(word_weights, 1)[0]
                inp.fill_(word_idx)
                generated += 1
                if int(word_idx) == EOS_ID:
                    break
    return generated / (time.perf_counter() - t0)


def stepping_tokens_per_s(lm: LanguageModel, texts: list[str], max_new_tokens: int, seconds: float) -> float:
    """The same loop through ``lm.step``: one request after another, one row, one token a call."""
    with torch.inference_mode():
        lm.step(lm.start_state(1), torch.tensor([BOS_ID]))  # warm-up
        generated, t0, i = 0, time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds or i == 0:
            ids = [BOS_ID, *lm.tokenizer.encode(texts[i % len(texts)]).ids]
            torch.manual_seed(i)
            i += 1
            state = lm.start_state(1)
            for tok in ids:
                logprobs, state = lm.step(state, torch.tensor([tok]))
            for _ in range(max_new_tokens):
                word_idx = torch.multinomial(logprobs[0].exp(), 1)
                logprobs, state = lm.step(state, word_idx)
                generated += 1
                if int(word_idx) == EOS_ID:
                    break
    return generated / (time.perf_counter() - t0)


async def engine_run(
    engine: Engine, streams: int, texts: list[str], max_new_tokens: int, seconds: float
) -> dict:
    ttft: list[float] = []
    per_token: list[float] = []
    tokens = 0
    stop_at = time.perf_counter() + seconds

    async def client(k: int) -> None:
        nonlocal tokens
        j = k
        while True:
            req = GenerationRequest(
                texts[j % len(texts)], max_new_tokens=max_new_tokens, sampling=SamplingParams(seed=j)
            )
            j += streams
            t0 = time.perf_counter()
            first: float | None = None
            last: float | None = None
            n = 0
            async with engine.generate(req) as stream:
                async for _ in stream:
                    last = time.perf_counter()
                    first = first or last
                    n += 1
            tokens += n
            if first is not None and last is not None:  # at least one token came
                ttft.append(first - t0)
                if n > 1:
                    per_token.append((last - first) / (n - 1))
            if time.perf_counter() >= stop_at:
                return

    t0 = time.perf_counter()
    await asyncio.gather(*[client(k) for k in range(streams)])
    elapsed = time.perf_counter() - t0
    return {"tokens_s": tokens / elapsed, "ttft": ttft, "per_token": per_token, "requests": len(ttft)}


def model_rows(
    m: BenchModel, texts: list[str], streams: list[int], max_new: int, seconds: float
) -> list[list]:
    """One model's rows: the naive loop, then the engine at each number of streams (GFLOP/s and
    % of the probe are filled in by the caller)."""
    lm = m.lm
    fpt = flops_per_token(lm)
    naive = naive_tokens_per_s(lm, texts, max_new, seconds)

    async def all_levels() -> list[dict]:
        out = []
        async with Engine(lm, EngineConfig(max_rows=max(streams), max_wait_ms=0)) as engine:
            await engine_run(engine, 1, texts, 4, 0)  # warm-up
            for s in streams:
                k = engine.stats.kinds["generate"]
                steps, rows = k.batches, k.rows
                res = await engine_run(engine, s, texts, max_new, seconds)
                res["rows"] = (k.rows - rows) / max(k.batches - steps, 1)  # mean rows per decoding step
                out.append(res)
        return out

    results = asyncio.run(all_levels())
    one = results[0]["tokens_s"] if streams[0] == 1 else float("nan")
    nan = float("nan")
    naive_name = (
        "naive loop (pytorch/examples generate.py)"
        if isinstance(lm, RNNLanguageModel)
        else "naive loop (lm.step)"
    )
    rows = [[m.name, naive_name, 1, 1.0, naive, 1.0, nan, nan, nan, nan, nan, naive * fpt / 1e9, nan]]
    for s, r in zip(streams, results, strict=True):
        rows.append(
            [
                m.name,
                f"engine, {s} concurrent streams",
                s,
                r["rows"],
                r["tokens_s"],
                r["tokens_s"] / naive,
                r["tokens_s"] / one,
                1e3 * percentile(r["ttft"], 50),
                1e3 * percentile(r["ttft"], 95),
                1e3 * percentile(r["per_token"], 50),
                1e3 * percentile(r["per_token"], 95),
                r["tokens_s"] * fpt / 1e9,
                nan,
            ]
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n")[0], several_models=True)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32, 64])
    args = p.parse_args(argv)
    seconds = args.seconds or (0.5 if args.quick else 6.0)
    max_new = 8 if args.quick else args.max_new_tokens
    streams = [1, 8] if args.quick else args.streams

    models = load_bench_models(args)
    probe = ceiling(args.device, min(seconds, 2.0))
    texts = prompts(512)
    rows = [row for m in models for row in model_rows(m, texts, streams, max_new, seconds)]
    probe.after = matmul_gflops(args.device, seconds=min(seconds, 2.0))
    for row in rows:
        row[12] = 100 * row[11] / probe.gflops
    headers = [
        "model",
        "method",
        "streams",
        "rows/step",
        "tokens/s",
        "× naive",
        "× 1 stream",
        "TTFT p50 ms",
        "TTFT p95 ms",
        "per-token p50 ms",
        "per-token p95 ms",
        "GFLOP/s",
        "% of matmul",
    ]
    lines = [
        models_header(
            "Generation (library, continuous batching)",
            args,
            models,
            probe,
            command_line("rnnlm.bench.generation", argv),
        ),
        f"- workload: seeded sampling (temperature 1), max_new_tokens={max_new}, prompts of 2-6 characters; "
        f"{seconds:g} s per row; GFLOP/s counts generated tokens only (prefill excluded)",
        "",
        table(headers, rows),
    ]
    by_model = {m.name: [r[1:] for r in rows if r[0] == m.name] for m in models}
    if len(models) > 1:
        lines += [
            "",
            f"Tokens/s, {' vs '.join(f'`{m.name}`' for m in models)} (same run):",
            "",
            table(
                ["method", *(f"`{m.name}` tok/s" for m in models), "first ÷ last"],
                ratio_rows(by_model, lambda r: str(r[0]).split(" (")[0], 3),
            ),
        ]
    lines.append("")
    engine = {m.name: {r[1]: r[3] for r in by_model[m.name] if r[0].startswith("engine")} for m in models}
    for m in models:
        own = engine[m.name]
        if 64 in streams and 1 in streams:
            gain = own[64] / own[1]
            lines.append(
                f"- `{m.name}`: target 64 streams ≥ 15× one stream (issue 24): {gain:.1f}× — {mark(gain >= 15)}"
            )
    if len(models) > 1 and 1 in streams:
        first, last = engine[models[0].name][1], engine[models[-1].name][1]
        lines.append(
            f"- target: one stream of `{models[0].name}` ≥ 0.8× `{models[-1].name}`'s (issue 24): "
            f"{first / last:.2f}× — {mark(first / last >= 0.8)}"
        )
    text = "\n".join(lines)
    print(text)
    write_section("generation", text, resolve_out(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
