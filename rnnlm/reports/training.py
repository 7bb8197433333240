"""docs/TRAINING.md's run table and validation curves, drawn from the runs' JSON-lines logs.

``python -m rnnlm.reports.training`` reads ``docs/training/history/<run>.jsonl`` (the ``log.jsonl``
each :mod:`model.training.fit` run writes) and ``summary.json`` (written by :mod:`rnnlm.sweep`), rewrites
the part of docs/TRAINING.md between its ``runs:begin``/``runs:end`` markers, and draws two SVG
plots (valid perplexity against tokens seen and against minutes). Plain SVG, no plotting library.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from model.text.data import write_text_atomically

BEGIN, END = "<!-- runs:begin (python -m rnnlm.reports.training) -->", "<!-- runs:end -->"
COLORS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
]


def read_curves(logs: Path) -> dict[str, list[dict]]:
    curves = {}
    for path in sorted(logs.glob("*.jsonl")):
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        curves[path.stem] = [r for r in records if r.get("event") == "valid"]
    return curves


def svg_plot(
    curves: dict[str, list[dict]],
    x_key: str,
    x_label: str,
    x_scale: float,
    title: str,
    y_max: float = 150.0,
    width: int = 760,
    height: int = 420,
) -> str:
    """Valid perplexity (log scale, capped at ``y_max``) against ``x_key`` for every run."""
    left, right, top, bottom = 60, 220, 30, 45
    pw, ph = width - left - right, height - top - bottom
    xs = [r[x_key] * x_scale for c in curves.values() for r in c]
    x_max = max(xs) if xs else 1.0
    y_lo, y_hi = math.log(20.0), math.log(y_max)

    def px(x: float) -> float:
        return left + pw * x / x_max

    def py(y: float) -> float:
        return top + ph * (1 - (math.log(min(max(y, 20.0), y_max)) - y_lo) / (y_hi - y_lo))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="18" font-size="13">{title}</text>',
    ]
    for tick in (20, 30, 40, 50, 70, 100, 150):
        if tick <= y_max:
            out.append(
                f'<line x1="{left}" x2="{left + pw}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" stroke="#ddd"/>'
                f'<text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">{tick}</text>'
            )
    for i in range(6):
        x = x_max * i / 5
        out.append(f'<text x="{px(x):.1f}" y="{top + ph + 16}" text-anchor="middle">{x:.3g}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">{x_label}</text>')
    out.append(
        f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" '
        f'text-anchor="middle">valid perplexity (log scale)</text>'
    )
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    for i, (name, records) in enumerate(curves.items()):
        if not records:
            continue
        color = COLORS[i % len(COLORS)]
        points = " ".join(f"{px(r[x_key] * x_scale):.1f},{py(r['valid_perplexity']):.1f}" for r in records)
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.6"/>')
        best = min(r["valid_perplexity"] for r in records)
        out.append(
            f'<text x="{left + pw + 8}" y="{top + 12 + 14 * i}" fill="{color}">{name} ({best:.1f})</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def run_table(summary: dict) -> str:
    rows = [
        "| run | group | what differs | best valid ppl | at tokens | tokens seen | minutes | params |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        rows.append(
            f"| {name} | {s.get('group', '')} | {s.get('note', '')} | {fmt(s.get('best_valid'))} "
            f"| {millions(s.get('best_at_tokens'))} | {millions(s.get('tokens_seen'))} "
            f"| {fmt((s.get('elapsed_s') or 0) / 60, '.1f')} | {millions(s.get('parameters'))} |"
        )
    return "\n".join(rows)


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def millions(value: float | None) -> str:
    return "–" if value is None else f"{value / 1e6:.1f} M"


def write_report(logs: Path, doc: Path, figures: Path) -> None:
    summary = json.loads((logs / "summary.json").read_text(encoding="utf-8"))
    curves = read_curves(logs)
    figures.mkdir(parents=True, exist_ok=True)
    groups = {
        "ablations": {k: v for k, v in curves.items() if k.startswith("a-")},
        "finals": {k: v for k, v in curves.items() if not k.startswith("a-")},
    }
    links = []
    for group, chosen in groups.items():
        for x_key, label, scale, suffix in (
            ("tokens_seen", "tokens seen (millions)", 1e-6, "tokens"),
            ("elapsed_s", "minutes", 1 / 60, "minutes"),
        ):
            name = f"curves-{group}-{suffix}.svg"
            write_text_atomically(
                figures / name,
                svg_plot(chosen, x_key, label, scale, f"{group}: valid perplexity against {suffix}"),
            )
            links.append(f"![{group} against {suffix}]({figures.relative_to(doc.parent).as_posix()}/{name})")
    block = f"{BEGIN}\n{run_table(summary)}\n\n" + "\n\n".join(links) + f"\n{END}"
    text = doc.read_text(encoding="utf-8") if doc.exists() else f"# Training\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise ValueError(f"{doc}: the markers {BEGIN!r} and {END!r} are missing")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    write_text_atomically(doc, head + block + tail)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnnlm.reports.training", description=__doc__.split("\n")[0])
    p.add_argument("--logs", default="docs/training/history", help="<run>.jsonl logs and summary.json")
    p.add_argument("--doc", default="docs/TRAINING.md")
    p.add_argument("--figures", default="docs/training")
    args = p.parse_args(argv)
    write_report(Path(args.logs), Path(args.doc), Path(args.figures))
    print(json.dumps({"doc": args.doc}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
