"""CLI wrappers of the training stages: ``r1lab tokenizer train``, ``r1lab pretrain --help``, ``python -m r1lab``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    err = capsys.readouterr().err
    assert rc == 2 and f"r1lab tokenizer: error: {bad}:2:" in err and "Traceback" not in err


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


# ------------------------------------------------------------------------------------------------ config values
def _examples(module) -> list[list[str]]:
    """The ``r1lab <command> ...`` example lines of a command's help, as argv lists without the command words."""
    import shlex

    out = []
    for line in (module.__doc__ or "").splitlines():
        if line.strip().startswith(f"r1lab {module.NAME} "):
            out.append(shlex.split(line, comments=True)[2:])
    return out


def test_help_examples_parse():
    """Every example in ``pretrain`` / ``extend-context`` --help is accepted by the override parser."""
    from r1lab.commands import extend_context, pretrain
    from r1lab.config_cli import apply_overrides
    from r1lab.train.context import ExtendContextConfig
    from r1lab.train.pretrain import PretrainConfig

    for module, cls in ((pretrain, PretrainConfig), (extend_context, ExtendContextConfig)):
        examples = _examples(module)
        assert len(examples) >= 3
        for argv in examples:
            apply_overrides(cls(), argv)
    cfg = apply_overrides(PretrainConfig(), [a for a in _examples(pretrain) if "--corpus" in a][0])
    assert cfg.corpus == ["a.jsonl", "b.txt"]


def test_list_overrides_accept_the_documented_forms():
    from r1lab.config_cli import apply_overrides
    from r1lab.train.context import ExtendContextConfig
    from r1lab.train.pretrain import PretrainConfig

    for value in ('["a.jsonl","b.txt"]', "a.jsonl,b.txt", "a.jsonl, b.txt"):
        assert apply_overrides(PretrainConfig(), ["--corpus", value]).corpus == ["a.jsonl", "b.txt"]
    assert apply_overrides(PretrainConfig(), ["--corpus", "g.jsonl"]).corpus == ["g.jsonl"]
    assert apply_overrides(PretrainConfig(), ["--corpus", '"g.jsonl"']).corpus == ["g.jsonl"]  # not ['g', '.', ...]
    for value in ("[256,512]", "256,512"):
        assert apply_overrides(ExtendContextConfig(), ["--phases", value]).phases == [256, 512]
    assert apply_overrides(PretrainConfig(), ["--betas", "0.9,0.99"]).betas == [0.9, 0.99]
    assert apply_overrides(PretrainConfig(), ["--steps", "1e3"]).steps == 1000


@pytest.mark.parametrize(("cls", "argv", "message"), [
    ("pretrain", ["--corpus", "256"], "--corpus: expected list[str], got 256 (int)"),
    ("pretrain", ["--corpus", "[1]"], "--corpus[0]: expected str, got 1 (int)"),
    ("pretrain", ["--corpus", "[a.jsonl"], "--corpus: invalid JSON list '[a.jsonl'"),
    ("pretrain", ["--steps", "1.5"], "--steps: expected int, got 1.5 (float)"),
    ("pretrain", ["--model-overrides", "[1]"], "--model_overrides: expected dict[str, Any], got [1] (list)"),
    ("pretrain", ["--corpus-levels", "1,x"], "--corpus_levels[1]: expected int, got 'x'"),
    ("context", ["--phases", "256"], "--phases: expected list[int], got 256 (int)"),
    ("context", ["--phases", '["256"]'], "--phases[0]: expected int, got '256' (str)"),
])
def test_bad_override_names_field_value_and_type(cls, argv, message):
    from r1lab.config_cli import OverrideError, apply_overrides
    from r1lab.train.context import ExtendContextConfig
    from r1lab.train.pretrain import PretrainConfig

    config = PretrainConfig() if cls == "pretrain" else ExtendContextConfig()
    with pytest.raises(OverrideError) as err:
        apply_overrides(config, argv)
    assert str(err.value).startswith(message)


def test_config_file_values_are_checked(tmp_path):
    from r1lab.config_cli import OverrideError, load_config
    from r1lab.train.pretrain import PretrainConfig

    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"corpus": "a.jsonl", "lr": 1, "steps": 10.0, "compile": True}))
    cfg = load_config(PretrainConfig, path)
    assert cfg.corpus == ["a.jsonl"] and cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.steps == 10
    for data, message in [
        ({"corpus": 256}, "field 'corpus': expected list[str], got 256 (int) (write a JSON list like [1,2])"),
        ({"steps": "10"}, "field 'steps': expected int, got '10' (str)"),
        ({"compile": "yes"}, "field 'compile': expected bool, got 'yes' (str)"),
        ({"lr": True}, "field 'lr': expected float, got True (bool)"),
        ({"peak_tflops": "x"}, "field 'peak_tflops': expected float | None, got 'x' (str)"),
        ([1, 2], "expected a JSON object of PretrainConfig fields, got list"),
    ]:
        path.write_text(json.dumps(data))
        with pytest.raises(OverrideError) as err:
            load_config(PretrainConfig, path)
        assert str(err.value) == f"{path}: {message}"
    path.write_text(json.dumps({"peak_tflops": None}))
    assert load_config(PretrainConfig, path).peak_tflops is None


def test_cli_bad_override_is_one_line(tmp_path, capsys):
    rc = main(["extend-context", "--phases", "256", "--out-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "--phases: expected list[int], got 256 (int)" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
