"""CLI wrappers of the training stages: ``r1lab tokenizer train``, ``r1lab pretrain --help``, ``python -m r1lab``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import write_corpus

from r1lab.cli import main


def test_tokenizer_train_cli(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.jsonl", n_docs=50)
    txt = tmp_path / "c.txt"
    txt.write_text("Seven plus five is twelve.\n\nEight is even.\n", encoding="utf-8")
    rc = main(["tokenizer", "train", "--corpus", str(corpus), str(txt), "--vocab-size", "320", "--out",
               str(tmp_path / "tok")])
    assert rc == 0, capsys.readouterr().out
    from r1lab.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tmp_path / "tok")
    assert 268 <= tok.vocab_size <= 320 and tok.decode(tok.encode("12 plus 7 is 19.")) == "12 plus 7 is 19."


def test_tokenizer_train_cli_reports_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"x": 1}\n')
    rc = main(["tokenizer", "train", "--corpus", str(bad), "--vocab-size", "300", "--out", str(tmp_path / "t")])
    assert rc == 1 and f"{bad}:2:" in capsys.readouterr().out


def test_pretrain_help_lists_every_config_field():
    from dataclasses import fields

    from r1lab.train.pretrain import PretrainConfig

    out = subprocess.run([sys.executable, "-m", "r1lab", "pretrain", "--help"], capture_output=True, text=True, check=False,
                         timeout=60).stdout
    for f in fields(PretrainConfig):
        assert f"--{f.name.replace('_', '-')}" in out


def test_extend_context_help_lists_fields():
    from dataclasses import fields

    from r1lab.train.context import ExtendContextConfig

    out = subprocess.run([sys.executable, "-m", "r1lab", "extend-context", "--help"], capture_output=True, text=True,
                         check=False, timeout=60).stdout
    for f in fields(ExtendContextConfig):
        assert f"--{f.name.replace('_', '-')}" in out
