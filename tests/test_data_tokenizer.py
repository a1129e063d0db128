"""Tokenizer: training, AutoTokenizer compatibility, special tokens, chat template, round-trips, generic HF dirs."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as RustTokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from r1lab.data.tokenizer import (
    ASSISTANT,
    BOS,
    CHAT_TEMPLATE,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    TAG_TOKENS,
    USER,
    load_tokenizer,
    train_from_files,
    train_tokenizer,
)

WORDS = "the cat sat on a mat and then we add numbers to find how many apples remain after lunch".split()
ZH = "数学很有趣我们来计算答案是多少"


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
        out.append(" ".join(words) + f" {rng.randint(0, 99999)} + {rng.randint(0, 999)}. " + "".join(rng.sample(ZH, 4)))
    return out


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(corpus(3000), vocab_size=400, out_dir=out)
    return out


SAMPLES = [
    "hello world",
    "Compute 12345 + 678 = 13023.",
    "数学很有趣，答案是 42。",
    "emoji 🤖🎉 and ZWJ 👩‍👩‍👧",
    "control \x00\x01\x7f bytes\ttab\r\nnewline",
    "  leading and trailing spaces  ",
    "<think>\nreason\n</think>\n\n<answer>5</answer>",
    f"{BOS}{USER}q{ASSISTANT}a{EOS}",
    "Ünïcödé ñ ß ∑ ∫ √2",
    "",
]


def test_files_saved_and_autotokenizer_loads(tok_dir: Path) -> None:
    assert (tok_dir / "tokenizer.json").exists()
    cfg = json.loads((tok_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["bos_token"] == BOS and cfg["eos_token"] == EOS and cfg["pad_token"] == PAD
    assert cfg["chat_template"] == CHAT_TEMPLATE
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    auto = AutoTokenizer.from_pretrained(str(tok_dir))
    assert (auto.bos_token_id, auto.eos_token_id, auto.pad_token_id) == (0, 1, 2)
    assert len(auto) == 400


def test_autotokenizer_encodes_like_wrapper(tok_dir: Path) -> None:
    auto = AutoTokenizer.from_pretrained(str(tok_dir))
    tok = load_tokenizer(tok_dir)
    for text in SAMPLES + corpus(20, seed=1):
        assert auto(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
        # AutoTokenizer's default (add_special_tokens=True) prepends BOS, like DeepSeek's tokenizer
        assert auto(text)["input_ids"] == tok.encode(text, add_bos=True)
    assert tok.encode_batch(SAMPLES, add_bos=True) == [tok.encode(t, add_bos=True) for t in SAMPLES]


def test_special_and_tag_tokens_are_single_ids(tok_dir: Path) -> None:
    tok = load_tokenizer(tok_dir)
    seen = set()
    for token in SPECIAL_TOKENS + TAG_TOKENS:
        ids = tok.encode(token)
        assert len(ids) == 1, token
        assert tok.token_id(token) == ids[0]
        assert tok.decode(ids) == token
        seen.add(ids[0])
    assert len(seen) == len(SPECIAL_TOKENS) + len(TAG_TOKENS)
    assert [tok.token_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tok.token_id("<not-a-token>") is None
    # control tokens vanish with skip_special_tokens, the reward tags stay
    text = f"{BOS}{USER}hi{ASSISTANT}<think>\nx\n</think>\n\n<answer>5</answer>{EOS}"
    assert tok.decode(tok.encode(text), skip_special_tokens=True) == "hi<think>\nx\n</think>\n\n<answer>5</answer>"


def test_round_trip_unicode_and_bytes(tok_dir: Path) -> None:
    tok = load_tokenizer(tok_dir)
    for text in SAMPLES:
        assert tok.decode(tok.encode(text)) == text
    rng = random.Random(3)
    for _ in range(50):  # random code points (no surrogates), so every byte value shows up
        text = "".join(chr(rng.choice([rng.randint(0, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])) for _ in range(30))
        assert tok.decode(tok.encode(text)) == text


def test_digits_are_split_individually(tok_dir: Path) -> None:
    tok = load_tokenizer(tok_dir)
    ids = tok.encode("1234567890")
    assert len(ids) == 10
    assert [tok.decode([i]) for i in ids] == list("1234567890")


def test_chat_template_exact_string(tok_dir: Path) -> None:
    tok = load_tokenizer(tok_dir)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "<think>\neasy\n</think>\n\n2"},
        {"role": "user", "content": "2+2?"},
    ]
    expected = f"{BOS}Be brief.{USER}1+1?{ASSISTANT}<think>\neasy\n</think>\n\n2{EOS}{USER}2+2?"
    assert tok.apply_chat_template(messages, add_generation_prompt=False) == expected
    assert tok.apply_chat_template(messages, add_generation_prompt=True) == expected + f"{ASSISTANT}<think>\n"
    auto = AutoTokenizer.from_pretrained(str(tok_dir))
    assert auto.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        expected + f"{ASSISTANT}<think>\n"
    )
    ids = auto.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert list(ids) == tok.encode(expected + f"{ASSISTANT}<think>\n")
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    with pytest.raises(Exception, match="unknown chat role"):
        tok.apply_chat_template([{"role": "robot", "content": "x"}])


def test_save_and_reload(tok_dir: Path, tmp_path: Path) -> None:
    tok = load_tokenizer(tok_dir)
    tok.save(tmp_path / "copy")
    again = load_tokenizer(tmp_path / "copy")
    assert again.vocab_size == tok.vocab_size
    assert all(again.encode(t) == tok.encode(t) for t in SAMPLES)
    assert load_tokenizer(tok_dir / "tokenizer.json").encode("数学 42") == tok.encode("数学 42")
    lone = tmp_path / "lone.json"
    lone.write_bytes((tok_dir / "tokenizer.json").read_bytes())
    alone = load_tokenizer(lone)
    assert (alone.bos_id, alone.eos_id, alone.pad_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
    assert alone.encode("数学 42", add_bos=True) == tok.encode("数学 42", add_bos=True)
    assert load_tokenizer(tok) is tok
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing")


def test_save_never_publishes_a_partial_directory(tok_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """A kill after save_pretrained but before tokenizer_config.json is patched leaves no tokenizer.json that a rerun
    would reuse (a new directory appears whole or not at all; a model directory keeps only its own files)."""
    from types import SimpleNamespace

    import r1lab.data.tokenizer as T

    class Killed(BaseException):
        pass

    def dying_dumps(*args, **kwargs):
        raise Killed

    tok = load_tokenizer(tok_dir)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    monkeypatch.setattr(T, "json", SimpleNamespace(loads=json.loads, dumps=dying_dumps))
    with pytest.raises(Killed):
        tok.save(tmp_path / "new")
    with pytest.raises(Killed):
        tok.save(model)
    monkeypatch.undo()
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in model.iterdir()) == ["config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp directory left behind
    tok.save(model)
    tok.save(tmp_path / "new")
    assert (model / "config.json").read_text() == "{}"
    for d in (model, tmp_path / "new"):
        assert load_tokenizer(d).encode("数学 42") == tok.encode("数学 42")
        assert json.loads((d / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE


def test_train_from_files_and_speed(tmp_path: Path) -> None:
    rows = corpus(30000, seed=7)
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in rows[:20000]), "utf-8")
    txt = tmp_path / "b.txt"
    txt.write_text("\n\n".join(rows[20000:]), encoding="utf-8")
    size_mb = (jsonl.stat().st_size + txt.stat().st_size) / 1e6
    assert size_mb > 2
    start = time.perf_counter()
    train_from_files([jsonl, txt], vocab_size=512, out_dir=tmp_path / "tok")
    elapsed = time.perf_counter() - start
    assert elapsed < 20, f"training on {size_mb:.1f} MB took {elapsed:.1f}s"
    tok = load_tokenizer(tmp_path / "tok")
    assert tok.vocab_size <= 512
    assert tok.decode(tok.encode(rows[0])) == rows[0]
    assert len(tok.encode(rows[0])) < len(rows[0].encode("utf-8")) / 2  # merges actually compress


def test_vocab_size_too_small() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["x"], vocab_size=100, out_dir="/nonexistent")


# --- any local HF tokenizer ----------------------------------------------------------------------------------------

CHATML = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)


def build_qwen_like(out: Path) -> Path:
    """A tiny Qwen-style tokenizer: byte-level BPE, ChatML, no BOS, FIM tokens with Qwen's names."""
    rust = RustTokenizer(models.BPE())
    rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    rust.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    rust.train_from_iterator(corpus(500), trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=rust, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML
    )
    hf.save_pretrained(str(out))
    return out


def build_llama_like(out: Path) -> Path:
    """A tiny Llama-2-style tokenizer: Metaspace BPE, <s> prepended by the post-processor, no pad, [INST] template."""
    rust = RustTokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    rust.pre_tokenizer = pre_tokenizers.Metaspace()
    rust.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", *bytes_])
    rust.train_from_iterator(corpus(500), trainer=trainer)
    rust.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    rust.add_special_tokens([AddedToken("<s>", special=True), AddedToken("</s>", special=True)])
    template = (
        "{{ bos_token }}{%- for m in messages %}"
        "{%- if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
        "{%- else %}{{ ' ' + m['content'] + eos_token }}{%- endif %}{%- endfor %}"
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=rust, bos_token="<s>", eos_token="</s>", unk_token="<unk>", chat_template=template
    )
    hf.save_pretrained(str(out))
    return out


def test_wraps_qwen_like_directory(tmp_path: Path) -> None:
    tok = load_tokenizer(build_qwen_like(tmp_path / "qwen"))
    auto = AutoTokenizer.from_pretrained(str(tmp_path / "qwen"))
    assert tok.bos_id is None
    assert tok.eos_id == tok.token_id("<|im_end|>") and tok.pad_id == tok.token_id("<|endoftext|>")
    assert tok.vocab_size == len(auto)
    for text in SAMPLES[:6]:
        assert tok.encode(text) == auto(text, add_special_tokens=False)["input_ids"]
        assert tok.encode(text, add_bos=True) == tok.encode(text)  # no BOS to add
        assert tok.decode(tok.encode(text)) == text
    msgs = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(msgs, add_generation_prompt=True) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_wraps_llama_like_directory(tmp_path: Path) -> None:
    tok = load_tokenizer(build_llama_like(tmp_path / "llama"))
    assert tok.bos_id == tok.token_id("<s>") and tok.eos_id == tok.token_id("</s>")
    assert tok.pad_id == tok.eos_id  # no pad token: falls back to EOS
    ids = tok.encode("the cat sat", add_bos=True)
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    assert tok.decode(ids, skip_special_tokens=True).strip() == "the cat sat"
    assert tok.decode(tok.encode("数学 🤖")).strip() == "数学 🤖"  # byte fallback
