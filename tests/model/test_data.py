import json

from model.text.data import pd98_lines, prepare_plain, split_lines, strip_pos_tags, write_corpus


def test_strip_pos_tags_splits_on_last_slash():
    line = "迈向/v  充满/v  希望/n  １/２/m  ——/w"
    assert strip_pos_tags(line) == "迈向充满希望１/２——"


def test_pd98_lines_drop_empty_and_keep_characters():
    raw = ["１２月/t  ３１日/t  ，/w", "", "   ", "ＡＢＣ/nx  的/u"]
    assert pd98_lines(raw) == ["１２月３１日，", "ＡＢＣ的"]


def test_split_is_90_5_5_in_file_order():
    lines = [f"s{i}" for i in range(103)]
    s = split_lines(lines)
    assert s["train"] == lines[:92]  # floor(0.9 * 103) = 92
    assert s["valid"] == lines[92:97]  # floor(0.95 * 103) = 97
    assert s["test"] == lines[97:]
    assert sum(len(v) for v in s.values()) == 103


def test_synthetic_tagged_file_reproduces_the_split(tmp_path):
    raw = [f"词{i}/n  {i}/m" for i in range(40)] + [""]
    lines = pd98_lines(raw)
    manifest = write_corpus(tmp_path, split_lines(lines), {"name": "synthetic"})
    train = (tmp_path / "train.txt").read_text(encoding="utf-8").splitlines()
    assert train == [f"词{i}{i}" for i in range(36)]
    assert (tmp_path / "test.txt").read_text(encoding="utf-8").splitlines() == ["词3838", "词3939"]
    on_disk = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk == manifest
    assert manifest["splits"]["valid"]["lines"] == 2


def test_prepare_plain_strips_blank_lines(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.txt").write_text("一\n\n  二  \n", encoding="utf-8")
    out = tmp_path / "corpus"
    manifest = prepare_plain(out, tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt")
    assert (out / "train.txt").read_text(encoding="utf-8") == "一\n二\n"
    assert manifest["splits"]["test"]["lines"] == 2
    assert len(manifest["splits"]["train"]["sha256"]) == 64
