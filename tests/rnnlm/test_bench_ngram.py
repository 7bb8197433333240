"""The n-gram micro-benchmark runs, and every implementation it times gives the numpy tables'
distribution (its correctness column), on a tiny KN model."""

from __future__ import annotations

import torch

from model.models.ngram.model import build_ngram
from model.models.ngram.store import save_ngram
from model.models.ngram.torch_tables import TorchBackoffTables, histories_of
from model.text.tokenizer import Tokenizer
from rnnlm.bench import ngram as bench

from ..conftest import TINY_LINES


def test_the_ngram_benchmark_checks_each_implementation_against_numpy(tmp_path, capsys):
    tok = Tokenizer.build(TINY_LINES, kind="char")
    save_ngram(tmp_path / "kn4", build_ngram(tok, TINY_LINES, order=4))
    assert bench.main(["--quick", "--ngram", str(tmp_path / "kn4"), "--seconds", "0.01"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    body = [[cell.strip() for cell in r] for r in rows[2:]]  # past the header and its rule
    assert len(body) == 2 * 5  # two batch sizes, five implementations
    assert {r[1].split(",")[0] for r in body} >= {"previous torch code", "now: histories (next_logprobs)"}
    for rows_per_call, name, us, _, diff in body:
        assert float(us.replace(",", "")) > 0, name
        assert float(diff) <= 1e-5, (rows_per_call, name)


def test_the_baseline_is_the_previous_algorithm_on_the_same_tables():
    tok = Tokenizer.build(TINY_LINES, kind="char")
    kn = build_ngram(tok, TINY_LINES, order=3)
    tables = TorchBackoffTables(kn.tables)
    ids = torch.tensor([2, *tok.encode("厨房里的油用完了").ids])
    hist = histories_of(ids, torch.arange(len(ids)), 2)
    want = torch.from_numpy(kn.tables.next_logprobs(hist.numpy())).float()
    torch.testing.assert_close(bench.PreviousTorchTables(tables).next_logprobs(hist), want, atol=1e-5, rtol=0)
