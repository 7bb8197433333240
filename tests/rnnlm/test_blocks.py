"""Marked blocks: a command rewrites its own block of a page and nothing else."""

from rnnlm.reports.blocks import carried_blocks, put_block


def test_a_block_is_appended_then_replaced_in_place():
    doc = "# Results\n\nintro\n"
    once = put_block(doc, "rescoring:pinyin", "| a | 1 |")
    assert once.startswith(doc.rstrip()) and "| a | 1 |" in once
    twice = put_block(once + "\ntail\n", "rescoring:pinyin", "| a | 2 |")
    assert "| a | 1 |" not in twice and "| a | 2 |" in twice and twice.rstrip().endswith("tail")
    assert twice.count("<!-- rescoring:pinyin:start -->") == 1


def test_blocks_are_carried_by_prefix_and_others_left_alone():
    doc = put_block(put_block("x", "rescoring:pinyin", "P"), "rescoring:wordorder", "W")
    doc = put_block(doc, "bench:attacks", "A")
    carried = carried_blocks(doc, "rescoring:")
    assert [b.splitlines()[1] for b in carried] == ["P", "W"]
    assert put_block(doc, "rescoring:pinyin", "P2").count("A") == doc.count("A")
