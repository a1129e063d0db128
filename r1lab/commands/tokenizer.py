"""Train a byte-level BPE tokenizer with DeepSeek's special tokens on corpus files (``r1lab.data.tokenizer``).

Examples:
  r1lab tokenizer train --corpus data/a.jsonl data/b.txt --vocab-size 8192 --out runs/tok
  r1lab tokenizer train --corpus big.jsonl.gz --vocab-size 32000 --max-chars 200000000 --out tok/
"""

from __future__ import annotations

NAME = "tokenizer"
HELP = "train a tokenizer (r1lab tokenizer train --corpus FILES --vocab-size N --out DIR)"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    t = sub.add_parser("train", help="train byte-level BPE on .jsonl / .txt files (optionally .gz)")
    t.add_argument("--corpus", nargs="+", required=True, help="corpus files (.jsonl with a text field, .txt)")
    t.add_argument("--vocab-size", type=int, required=True, help="total vocabulary size incl. special tokens")
    t.add_argument("--out", required=True, help="output directory (AutoTokenizer-loadable)")
    t.add_argument("--text-field", default="text", help="JSON field holding the text (default: text)")
    t.add_argument("--max-chars", type=int, default=None, help="read at most this many characters (a sample)")


def main(args) -> int:
    if getattr(args, "tokenizer_command", None) != "train":
        print("usage: r1lab tokenizer train --corpus FILES --vocab-size N --out DIR")
        return 2
    from r1lab.data.tokenizer import load_tokenizer, train_from_files

    # bad corpus files (file:line) and bad arguments are ValueErrors: r1lab.cli prints them as one line on stderr
    train_from_files(args.corpus, args.vocab_size, args.out, text_field=args.text_field, max_chars=args.max_chars)
    tok = load_tokenizer(args.out)
    sample = "Question: What is 12 + 7?"
    print(f"trained {tok!r} → {args.out}")
    print(f"sample: {sample!r} → {len(tok.encode(sample))} tokens")
    return 0
