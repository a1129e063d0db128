"""Streaming reading and tokenisation of user corpora of any size (.jsonl / .txt, optionally .gz).

Idea: pretraining corpora do not fit in memory as text, so documents are read line by line and tokenised in batches
(the Rust tokenizer encodes a batch on all cores; that is the fast path, ``batch_size=1`` is its readable twin).
Every bad input is reported as ``CorpusError`` with ``file:line`` so a user can open the exact spot.

Formats:
- ``.jsonl``: one JSON object per line; the document is ``row[text_field]`` (a string). Blank lines are skipped.
- ``.txt`` / ``.md``: ``txt_split="blank"`` (default): documents are separated by one or more blank lines (a paragraph
  per document; a file with no blank lines is one document); ``txt_split="line"``: every non-blank line is a document.
- Any of these may be gzip-compressed (``.jsonl.gz``, ``.txt.gz``).
Empty documents (``""``) are skipped; a file that yields no document at all is an error.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from r1lab.data.tokenizer import Tokenizer

JSONL_SUFFIXES = (".jsonl",)
TEXT_SUFFIXES = (".txt", ".md", ".text")


class CorpusError(ValueError):
    """Bad corpus input; ``str(err)`` starts with ``file:line:``."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        self.path, self.line, self.message = str(path), line, message
        super().__init__(f"{path}:{line}: {message}")


def _kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in JSONL_SUFFIXES:
        return "jsonl"
    if last in TEXT_SUFFIXES:
        return "txt"
    raise CorpusError(path, 0, f"unsupported file type {last or '(none)'!r}; use .jsonl or .txt (optionally .gz)")


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _gzip_problem(err: BaseException) -> str:
    """A one-line description of a gzip read failure (truncated stream, damaged deflate data, bad CRC, not gzip)."""
    if isinstance(err, EOFError):
        return "truncated gzip file (compressed stream ended early)"
    if isinstance(err, zlib.error):
        return f"damaged gzip data ({err})"
    return f"bad gzip file ({err})"


def _raw_lines(path: Path, f: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw bytes) of an open file; a gzip failure → ``CorpusError`` at the line being read."""
    lineno = 0
    while True:
        try:
            raw = f.readline()
        except (EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise CorpusError(path, lineno + 1, _gzip_problem(err)) from None
        if not raw:
            return
        lineno += 1
        yield lineno, raw


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yields (line number from 1, line text with its newline) decoding each line as strict UTF-8.

    A corrupt ``.gz`` (truncated, damaged, failed CRC, not gzip at all) is a ``CorpusError`` naming the file and the
    line being read when the damage was found (lines before it were already yielded)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(path, 0, "file not found")
    with _open_binary(path) as f:
        for lineno, raw in _raw_lines(path, f):
            try:
                line = raw.decode("utf-8", errors="strict")
            except UnicodeDecodeError as err:
                bad = raw[err.start : err.start + 1]
                raise CorpusError(path, lineno, f"not valid UTF-8: byte {bad!r} at column {err.start + 1}") from None
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]  # a UTF-8 byte-order mark is not content
            yield lineno, line


def iter_json_objects(path: str | Path, skip_comments: bool = False) -> Iterator[tuple[dict, int]]:
    """(row, line number) for every non-blank line of a JSONL file; strict UTF-8; invalid JSON or a non-object row →
    CorpusError naming file:line. Every JSONL reader of the project (corpora, prompts, SFT rows, task files,
    benchmarks) goes through here. ``skip_comments`` also skips lines starting with ``#``."""
    for lineno, line in iter_lines(path):
        text = line.strip()
        if not text or (skip_comments and text.startswith("#")):
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise CorpusError(path, lineno, f"invalid JSON: {err.msg} (column {err.colno})") from None
        if not isinstance(row, dict):
            raise CorpusError(path, lineno, f"expected a JSON object, got {type(row).__name__}")
        yield row, lineno


def _iter_jsonl(path: Path, text_field: str) -> Iterator[tuple[str, int]]:
    for row, lineno in iter_json_objects(path):
        if text_field not in row:
            keys = ", ".join(sorted(map(str, row))) or "none"
            raise CorpusError(path, lineno, f"missing field {text_field!r} (fields: {keys})")
        text = row[text_field]
        if not isinstance(text, str):
            raise CorpusError(path, lineno, f"field {text_field!r} must be a string, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise CorpusError(path, lineno, f"field {text_field!r} holds a lone surrogate (\\ud800-\\udfff)") from None
        yield text, lineno


def _iter_txt(path: Path, split: Literal["blank", "line"]) -> Iterator[tuple[str, int]]:
    if split == "line":
        for lineno, line in iter_lines(path):
            text = line.rstrip("\r\n")
            if text.strip():
                yield text, lineno
        return
    buf: list[str] = []
    start = 0
    for lineno, line in iter_lines(path):
        if line.strip():
            if not buf:
                start = lineno
            buf.append(line)
        elif buf:
            yield "".join(buf).rstrip("\r\n"), start
            buf = []
    if buf:
        yield "".join(buf).rstrip("\r\n"), start


def iter_documents(
    path: str | Path, text_field: str = "text", txt_split: Literal["blank", "line"] = "blank"
) -> Iterator[tuple[str, str]]:
    """Yields ``(text, "file:line")`` for each non-empty document of one .jsonl / .txt file, streaming.

    Raises ``CorpusError`` (``file:line: ...``) for: a missing or empty file, invalid JSON, a row that is not an
    object, a missing text field, non-string text, non-UTF-8 bytes.
    """
    path = Path(path)
    if txt_split not in ("blank", "line"):
        raise ValueError(f"txt_split must be 'blank' or 'line', got {txt_split!r}")
    kind = _kind(path)
    rows = _iter_jsonl(path, text_field) if kind == "jsonl" else _iter_txt(path, txt_split)
    n = 0
    for text, lineno in rows:
        if text:
            n += 1
            yield text, f"{path}:{lineno}"
    if n == 0:
        raise CorpusError(path, 1, "empty file: no documents")


def _as_paths(paths: Sequence[str | Path] | str | Path) -> list[Path]:
    if isinstance(paths, (str, Path)):
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if not out:
        raise ValueError("no corpus files given")
    return out


def iter_corpus_texts(
    paths: Sequence[str | Path] | str | Path, text_field: str = "text", txt_split: Literal["blank", "line"] = "blank"
) -> Iterator[str]:
    """Texts of all documents of all files, in order."""
    for path in _as_paths(paths):
        for text, _ in iter_documents(path, text_field=text_field, txt_split=txt_split):
            yield text


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    buf: list[str] = []
    for item in items:
        buf.append(item)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def tokenize_documents(
    paths: Sequence[str | Path] | str | Path,
    tokenizer: Tokenizer,
    add_bos: bool = True,
    add_eos: bool = True,
    text_field: str = "text",
    txt_split: Literal["blank", "line"] = "blank",
    batch_size: int = 512,
) -> Iterator[list[int]]:
    """Yields one token list per document: ``[bos] + encode(text) + [eos]`` (bos only if the tokenizer has one).

    ``batch_size`` > 1 uses ``tokenizer.encode_batch`` (parallel in Rust); 1 encodes document by document.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tail = [tokenizer.eos_id] if add_eos else []
    texts = iter_corpus_texts(paths, text_field=text_field, txt_split=txt_split)
    if batch_size == 1:
        for text in texts:
            yield tokenizer.encode(text, add_bos=add_bos) + tail
        return
    for batch in _chunks(texts, batch_size):
        for ids in tokenizer.encode_batch(batch, add_bos=add_bos):
            yield ids + tail


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` via a temp file in the same folder (fsynced) and an atomic rename: a reader never sees half a
    file, and a kill leaves the old file intact."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_jsonl_atomic(rows, path: str | Path) -> Path:
    """Rows (dicts) as JSONL, atomically (``write_text_atomic``)."""
    return write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
