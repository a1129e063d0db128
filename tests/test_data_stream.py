"""Streaming corpus reading: formats, file:line errors for corrupt input, batched tokenisation."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from test_data_tokenizer import corpus

from r1lab.data.stream import CorpusError, iter_corpus_texts, iter_documents, tokenize_documents
from r1lab.data.tokenizer import load_tokenizer, train_tokenizer


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_documents_with_locations(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "a.jsonl", [{"text": "one"}, {"text": "二", "id": 2}, {"text": ""}, {"text": "3"}])
    docs = list(iter_documents(p))
    assert docs == [("one", f"{p}:1"), ("二", f"{p}:2"), ("3", f"{p}:4")]  # empty text skipped
    q = write_jsonl(tmp_path / "b.jsonl", [{"body": "x"}])
    assert list(iter_documents(q, text_field="body")) == [("x", f"{q}:1")]


def test_blank_lines_in_jsonl_are_skipped(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "a"}\n\n   \n{"text": "b"}\r\n', encoding="utf-8")
    assert [loc for _, loc in iter_documents(p)] == [f"{p}:1", f"{p}:4"]


def test_txt_blank_and_line_modes(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("first para\nstill first\n\n\nsecond\n\nthird\n", encoding="utf-8")
    assert list(iter_documents(p)) == [
        ("first para\nstill first", f"{p}:1"),
        ("second", f"{p}:5"),
        ("third", f"{p}:7"),
    ]
    assert [t for t, _ in iter_documents(p, txt_split="line")] == ["first para", "still first", "second", "third"]


def test_gzip_and_bom(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl.gz"
    with gzip.open(p, "wb") as f:
        f.write(b'\xef\xbb\xbf{"text": "bom"}\n{"text": "zip"}\n')
    assert [t for t, _ in iter_documents(p)] == ["bom", "zip"]


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (b"", 1, "empty file"),
        (b"\n\n", 1, "empty file"),
        (b'{"text": "a"}\n{"text": "b"}\n{"text": "c",\n', 3, "invalid JSON"),
        (b'{"text": "a"}\n{"txt": "b"}\n', 2, "missing field 'text'"),
        (b'{"text": 5}\n', 1, "must be a string, got int"),
        (b'{"text": "a"}\n{"text": "b\xff"}\n', 2, "not valid UTF-8"),
        (b'["text"]\n', 1, "expected a JSON object"),
        (b'{"text": "\\ud800"}\n', 1, "lone surrogate"),
    ],
)
def test_corrupt_jsonl_reports_file_and_line(tmp_path: Path, content: bytes, line: int, message: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_bytes(content)
    with pytest.raises(CorpusError) as info:
        list(iter_documents(p))
    assert info.value.line == line and info.value.path == str(p)
    assert str(info.value).startswith(f"{p}:{line}: ")
    assert message in str(info.value)


def _gz_corpus(n: int = 4000) -> bytes:
    return gzip.compress(b"".join(b'{"text": "document number %d"}\n' % i for i in range(n)))


def _damage_header_block(data: bytes) -> bytes:
    return data[:10] + b"\xff\xff\xff\xff" + data[14:]  # the first deflate block header → zlib.error


def _damage_crc(data: bytes) -> bytes:
    return data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[: len(d) // 2], "truncated gzip file"),
        (_damage_header_block, "damaged gzip data"),
        (_damage_crc, "bad gzip file (CRC check failed"),
        (lambda d: b'{"text": "plain, not gzip"}\n', "bad gzip file (Not a gzipped file"),
    ],
)
def test_corrupt_gzip_reports_file_and_line(tmp_path: Path, damage, message: str) -> None:
    p = tmp_path / "bad.jsonl.gz"
    p.write_bytes(damage(_gz_corpus()))
    seen: list[str] = []
    with pytest.raises(CorpusError) as info:
        for text, _ in iter_documents(p):
            seen.append(text)
    assert info.value.path == str(p) and info.value.line == len(seen) + 1  # the line being read when it broke
    assert str(info.value).startswith(f"{p}:{len(seen) + 1}: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_corrupt_txt_and_unsupported(tmp_path: Path) -> None:
    p = tmp_path / "bad.txt"
    p.write_bytes("ok line\n\xe4\xb8 broken\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"bad\.txt:2: not valid UTF-8"):
        list(iter_documents(p))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(CorpusError, match=r"empty\.txt:1: empty file"):
        list(iter_documents(empty))
    with pytest.raises(CorpusError, match="unsupported file type"):
        list(iter_documents(tmp_path / "x.csv"))
    with pytest.raises(CorpusError, match="file not found"):
        list(iter_documents(tmp_path / "missing.jsonl"))


def test_tokenize_documents_batched_equals_single(tmp_path: Path) -> None:
    train_tokenizer(corpus(500), vocab_size=350, out_dir=tmp_path / "tok")
    tok = load_tokenizer(tmp_path / "tok")
    rows = corpus(70, seed=9)
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in rows[:40]])
    b = tmp_path / "b.txt"
    b.write_text("\n\n".join(rows[40:]), encoding="utf-8")
    fast = list(tokenize_documents([a, b], tok, batch_size=16))
    slow = list(tokenize_documents([a, b], tok, batch_size=1))
    assert fast == slow and len(fast) == 70
    assert all(d[0] == tok.bos_id and d[-1] == tok.eos_id for d in fast)
    assert [tok.decode(d[1:-1]) for d in fast] == rows
    bare = list(tokenize_documents(a, tok, add_bos=False, add_eos=False))
    assert bare == [d[1:-1] for d in fast[:40]]
    assert list(iter_corpus_texts([a, b])) == rows
