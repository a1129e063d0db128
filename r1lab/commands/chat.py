"""Chat with a model in the terminal: the R1 chat format, streamed token by token, reasoning shown apart.

Text inside <think>…</think> is printed dim (on a terminal) or after a "[think]" marker (when piped), the answer after
it plainly (after "[answer]" when piped). Commands: /exit quits, /reset forgets the conversation. End of input also
quits. A message that, with the conversation before it, does not fit the context is dropped with a one-line note
and the session goes on. The prompt is the tokenizer's chat template (R1's forces the reply to open with
"<think>\\n"); a tokenizer without a chat template gets "User: …\\nAssistant:" turns.

Example:
  r1lab chat --model runs/r1/model --temperature 0.6
"""

from __future__ import annotations

NAME = "chat"
HELP = "interactive chat (streaming, <think> shown apart)"

import sys

DIM, RESET = "\033[2m", "\033[0m"


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="model directory (ours, or any local transformers causal LM)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model directory)")
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature (default 0.6, as R1)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus mass (default 0.95)")
    p.add_argument("--max-tokens", type=int, default=512, help="new tokens per reply (default 512)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")


class ThinkPrinter:
    """Prints streamed text, switching style at <think> / </think>."""

    def __init__(self, out, color: bool, thinking: bool):
        self.out, self.color, self.thinking = out, color, thinking
        self.started = False
        self.pending = ""
        self.strip_newlines = False

    def _mark(self) -> None:
        if self.color:
            self.out.write(DIM if self.thinking else RESET)
        else:
            self.out.write("[think] " if self.thinking else ("\n[answer] " if self.started else "[answer] "))

    def write(self, text: str) -> None:
        text = self.pending + text
        self.pending = ""
        while text:
            if self.strip_newlines:  # the blank lines between </think> and the answer
                text = text.lstrip("\n")
                if not text:
                    break
                self.strip_newlines = False
            if not self.started:
                self._mark()
                self.started = True
            tag = "</think>" if self.thinking else "<think>"
            at = text.find(tag)
            if at < 0:
                keep = _partial_tag(text, tag)  # a tag split across tokens: hold its start back
                self.out.write(text[: len(text) - keep])
                self.pending = text[len(text) - keep:]
                break
            self.out.write(text[:at])
            text = text[at + len(tag):]
            self.thinking = not self.thinking
            self._mark()
            self.strip_newlines = not self.thinking
        self.out.flush()

    def end(self) -> None:
        self.out.write(self.pending + (RESET if self.color else "") + "\n")
        self.pending = ""
        self.out.flush()


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``.

    >>> _partial_tag("abc</th", "</think>"), _partial_tag("abc", "</think>")
    (4, 0)
    """
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def render(tokenizer, messages: list[dict]) -> str:
    if getattr(tokenizer, "apply_chat_template", None) is not None:
        try:
            return tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        except ValueError:
            pass
    turns = "".join(f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}\n" for m in messages)
    return turns + "Assistant:"


def stream_reply(llm, prompt: str, sp, color: bool) -> str:
    """Stream the model's reply to ``prompt`` to stdout (reasoning shown apart); return the reply's text (with the
    template's forced "<think>\\n" opening put back). Raises ``ContextLengthError`` before printing anything when the
    prompt leaves no room in the context."""
    opened = prompt.rstrip().endswith("<think>")
    printer = ThinkPrinter(sys.stdout, color, thinking=opened)
    ids: list[int] = []
    shown = ""
    for token in llm.stream(prompt, sp):
        ids.append(token)
        text = llm.decode(ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            continue
        printer.write(text[len(shown):])
        shown = text
    printer.end()
    return ("<think>\n" if opened else "") + llm.decode(ids)


def too_long_message(err) -> str:
    """The one line shown for a message that does not fit the context (``err``: a ContextLengthError).

    >>> from r1lab.engine import ContextLengthError
    >>> too_long_message(ContextLengthError("x", 600, 512))
    'message too long for the context: 600 tokens > 511 (max_model_len 512 leaves no room to reply); message dropped'
    """
    return (f"message too long for the context: {err.tokens} tokens > {err.limit - 1} (max_model_len {err.limit} "
            f"leaves no room to reply); message dropped")


def main(args) -> int:
    from ..engine import LLM, ContextLengthError, SamplingParams

    llm = LLM(args.model, tokenizer=args.tokenizer, device=args.device)
    tok = llm.tokenizer
    if tok is None:
        print(f"error: {args.model} has no tokenizer files; pass --tokenizer DIR", file=sys.stderr)
        return 2
    sp = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed)
    color = sys.stdout.isatty()
    messages: list[dict] = []
    print("r1lab chat — /exit to quit, /reset to start over", flush=True)
    while True:
        try:
            line = input("> " if sys.stdin.isatty() else "")
        except EOFError:
            break
        line = line.strip()
        if not line:
            continue
        if line == "/exit":
            break
        if line == "/reset":
            messages = []
            print("(conversation cleared)", flush=True)
            continue
        messages.append({"role": "user", "content": line})
        try:
            reply = stream_reply(llm, render(tok, messages), sp, color)
        except ContextLengthError as err:  # the session goes on without this message
            messages.pop()
            print(too_long_message(err), flush=True)
            continue
        messages.append({"role": "assistant", "content": reply})
    return 0
