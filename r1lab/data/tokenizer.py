"""Byte-level BPE tokenizer with DeepSeek-R1's special tokens and chat template; a thin wrapper for any HF tokenizer.

Idea and source: DeepSeek-V3 (arXiv 2412.19437, §4.1 "Data Construction") uses byte-level BPE (128K vocabulary) whose
pre-tokenizer keeps digits apart; DeepSeek-R1 (arXiv 2501.12948) talks in the chat format
``<｜begin▁of▁sentence｜>{system}<｜User｜>{q}<｜Assistant｜>{a}<｜end▁of▁sentence｜>`` and its README asks to force
the response to start with ``<think>\\n``. The special-token strings here are DeepSeek's, byte for byte.

Training uses the HF ``tokenizers`` library (Rust, seconds for a few MB) and saves the standard ``tokenizer.json`` +
``tokenizer_config.json`` + ``chat_template.jinja`` directory that ``transformers.AutoTokenizer`` loads.

Deliberate differences from DeepSeek's released tokenizer:
- Pre-tokenizer: every digit is its own pre-token (V3 groups up to 3 digits) so small models can learn arithmetic
  digit by digit; the rest is GPT-2's byte-level regex rather than V3's longer CJK/punctuation regex.
- ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` are single added tokens that are *not* special: they survive
  ``decode(skip_special_tokens=True)`` because the rule rewards read them. ``<answer>`` tags are ours (R1-Zero's
  template asks for them; DeepSeek's vocabulary has no such token).
- The chat template does not strip ``<think>…</think>`` from earlier assistant turns (R1's template does): what a
  message says is what gets rendered, so SFT data keeps its reasoning.

``Tokenizer`` wraps either our directory or any local HF tokenizer directory (Qwen, Llama, ...): ``encode`` never adds
special tokens on its own (``add_bos`` prepends the BOS id only where the tokenizer has one, e.g. not for Qwen), so
all callers see one behaviour whatever model family they use.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as RustTokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
FIM_BEGIN = "<｜fim▁begin｜>"
FIM_HOLE = "<｜fim▁hole｜>"
FIM_END = "<｜fim▁end｜>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

# Control tokens: removed by decode(skip_special_tokens=True). Ids 0..len-1 in this order.
SPECIAL_TOKENS: tuple[str, ...] = (BOS, EOS, PAD, USER, ASSISTANT, FIM_BEGIN, FIM_HOLE, FIM_END)
# Tags the rewards read: single tokens, kept by decode(skip_special_tokens=True).
TAG_TOKENS: tuple[str, ...] = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

# R1 chat format. System text goes where it stands (R1 puts it right after BOS; it is normally the first message).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{ message['content'] }}"
    "{%- elif message['role'] == 'user' %}{{ '" + USER + "' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' %}{{ '" + ASSISTANT + "' + message['content'] + eos_token }}"
    "{%- else %}{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '" + ASSISTANT + THINK_OPEN + "\\n' }}{%- endif %}"
)


def _byte_level_bpe() -> RustTokenizer:
    """An untrained byte-level BPE: digits split one by one, then GPT-2's byte-level regex; no normaliser."""
    tok = RustTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _batched(texts: Iterable[str], batch: int = 1024) -> Iterator[list[str]]:
    """Groups texts into lists: the Rust trainer is much faster fed batches than single strings."""
    buf: list[str] = []
    for text in texts:
        buf.append(text)
        if len(buf) >= batch:
            yield buf
            buf = []
    if buf:
        yield buf


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path, min_frequency: int = 2) -> None:
    """Trains byte-level BPE on ``texts`` and saves an ``AutoTokenizer``-loadable directory to ``out_dir``.

    ``vocab_size`` counts everything (256 bytes + merges + the special and tag tokens); a small corpus may run out
    of merges first, giving a smaller vocabulary. Token ids: the special tokens are 0..7 (BOS 0, EOS 1, PAD 2),
    then the 256 byte tokens and merges, then the 4 tag tokens at the end.
    """
    n_fixed = len(SPECIAL_TOKENS) + len(TAG_TOKENS) + 256
    if vocab_size < n_fixed:
        raise ValueError(f"vocab_size={vocab_size} is below the minimum {n_fixed} (256 bytes + special tokens)")
    tok = _byte_level_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(TAG_TOKENS),
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_batched(texts), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )
    _save_hf(hf, Path(out_dir))


def _patch_config(hf: Any, cfg_path: Path) -> None:
    """Make tokenizer_config.json readable by older transformers / vLLM too (chat template inline, a class name
    transformers 4.x knows)."""
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if isinstance(hf.chat_template, str):
        cfg.setdefault("chat_template", hf.chat_template)
    if cfg.get("tokenizer_class") == "TokenizersBackend":
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # the name transformers 4.x also knows
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _fsync_files(directory: Path) -> None:
    """fsync every file of ``directory`` (before the renames that publish them)."""
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def _save_hf(hf: Any, out_dir: Path) -> None:
    """save_pretrained + ``_patch_config`` into a temp dir beside ``out_dir``, then publish it atomically: a new (or
    empty) ``out_dir`` is the temp dir renamed; into an existing one (a model directory) each file is renamed in,
    tokenizer.json last. A kill therefore never leaves a tokenizer.json beside a missing or torn
    tokenizer_config.json (reruns reuse a directory that has tokenizer.json: ``r1lab.train.data.ensure_tokenizer``)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        hf.save_pretrained(str(tmp))
        _patch_config(hf, tmp / "tokenizer_config.json")
        _fsync_files(tmp)
        if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
            os.replace(tmp, out_dir)
        else:
            names = sorted((p.name for p in tmp.iterdir()), key=lambda name: (name == "tokenizer.json", name))
            for name in names:
                os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def train_from_files(
    paths: Sequence[str | Path] | str | Path,
    vocab_size: int,
    out_dir: str | Path,
    text_field: str = "text",
    max_chars: int | None = None,
) -> None:
    """Trains a tokenizer on .jsonl ({"text": ...}) / .txt files, streamed line by line (see ``stream``).

    ``max_chars`` stops reading after that many characters (a sample is enough for BPE statistics).
    """
    from r1lab.data.stream import iter_corpus_texts  # local import: stream imports nothing from here at runtime

    if max_chars is not None and (not isinstance(max_chars, int) or max_chars <= 0):
        raise ValueError(f"max_chars must be a positive number of characters (or unset), got {max_chars!r}")
    texts = iter_corpus_texts(paths, text_field=text_field)
    if max_chars is not None:
        texts = _take_chars(texts, max_chars)
    train_tokenizer(texts, vocab_size, out_dir)


def _take_chars(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    seen = 0
    for text in texts:
        if seen >= max_chars:
            return
        seen += len(text)
        yield text


class Tokenizer:
    """One interface over our tokenizer and any local HF tokenizer (wraps a ``PreTrainedTokenizerFast`` as ``.hf``).

    ``encode`` adds no special tokens unless ``add_bos``; ``pad_id`` falls back to ``eos_id`` when the tokenizer
    has no pad token (Llama); ``bos_id`` is None when it has no BOS (Qwen).
    """

    def __init__(self, hf: Any) -> None:
        self.hf = hf
        # The Rust tokenizer behind a fast HF tokenizer: calling it directly skips the Python-side BatchEncoding
        # (2-3x faster); tests check it gives AutoTokenizer's ids. Classes that override encoding go through ``hf``.
        plain = getattr(type(hf), "_encode_plus", None) is getattr(PreTrainedTokenizerFast, "_encode_plus", None)
        self._rust: RustTokenizer | None = getattr(hf, "backend_tokenizer", None) if plain else None
        if hf.eos_token_id is None:
            raise ValueError(f"tokenizer {hf.name_or_path!r} has no eos_token; set one in tokenizer_config.json")

    # --- ids -------------------------------------------------------------------------------------------------
    @property
    def bos_id(self) -> int | None:
        return self.hf.bos_token_id

    @property
    def eos_id(self) -> int:
        return self.hf.eos_token_id

    @property
    def pad_id(self) -> int:
        return self.hf.pad_token_id if self.hf.pad_token_id is not None else self.eos_id

    @property
    def vocab_size(self) -> int:
        """Number of ids in use, added tokens included (the model's embedding needs at least this many rows)."""
        return len(self.hf)

    def token_id(self, token: str) -> int | None:
        """Id of a single token string (e.g. ``"<think>"``), or None if the vocabulary has no such token."""
        idx = self.hf.convert_tokens_to_ids(token)
        if idx is None or self.hf.convert_ids_to_tokens(idx) != token:
            return None
        return idx

    # --- text <-> ids -----------------------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        if self._rust is not None:
            ids = self._rust.encode(text, add_special_tokens=False).ids
        else:
            ids = self.hf(text, add_special_tokens=False)["input_ids"]
        return self._with_bos(ids) if add_bos else list(ids)

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False) -> list[list[int]]:
        """Batched ``encode``: the Rust backend tokenises the batch on all cores."""
        if not texts:
            return []
        if self._rust is not None:
            out = [e.ids for e in self._rust.encode_batch(list(texts), add_special_tokens=False)]
        else:
            out = self.hf(list(texts), add_special_tokens=False)["input_ids"]
        return [self._with_bos(ids) if add_bos else list(ids) for ids in out]

    def _with_bos(self, ids: list[int]) -> list[int]:
        return [self.bos_id, *ids] if self.bos_id is not None else list(ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)

    def apply_chat_template(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
        """Renders messages ({"role", "content"}) with the tokenizer's chat template; returns the text (not ids)."""
        if self.hf.chat_template is None:
            raise ValueError(f"tokenizer {self.hf.name_or_path!r} has no chat_template")
        return self.hf.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def save(self, out_dir: str | Path) -> None:
        _save_hf(self.hf, Path(out_dir))

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (
            f"Tokenizer({self.hf.name_or_path!r}, vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
            f"eos_id={self.eos_id}, pad_id={self.pad_id})"
        )


def load_tokenizer(path_or_dir: str | Path | Tokenizer | Any) -> Tokenizer:
    """Loads a local tokenizer directory (ours or any HF one), a ``tokenizer.json`` file, or wraps an HF object.

    Never reaches the hub: a path that does not exist is an error.
    """
    if isinstance(path_or_dir, Tokenizer):
        return path_or_dir
    if not isinstance(path_or_dir, (str, Path)):
        return Tokenizer(path_or_dir)  # an already-built HF tokenizer object
    path = Path(path_or_dir)
    if path.is_file() and path.suffix == ".json":
        if (path.parent / "tokenizer_config.json").exists():
            path = path.parent  # the config next to it names the special tokens
        else:  # a lone tokenizer.json: assume DeepSeek's special-token names
            hf = PreTrainedTokenizerFast(tokenizer_file=str(path), clean_up_tokenization_spaces=False)
            vocab = hf.get_vocab()
            names = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
            hf.add_special_tokens({k: v for k, v in names.items() if v in vocab})
            return Tokenizer(hf)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    if not any((path / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise FileNotFoundError(f"{path} holds no tokenizer.json / tokenizer_config.json / tokenizer.model")
    hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return Tokenizer(hf)
