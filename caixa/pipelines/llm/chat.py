"""What the `llm` step and `caixa ask` need from a language model, whichever backend serves
it: messages in, one answer out (constrained to a JSON schema when asked), with its token
counts and timings; and the text cut into parts that fit the model's context.

Two backends: llama-cpp-python in this process (caixa/pipelines/llama.py) and any
OpenAI-compatible server by URL (caixa/pipelines/openai_api.py: Ollama, LocalAI, llama.cpp's
server, vLLM).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from caixa.errors import StepError
from caixa.pipelines.common.sentences import paragraphs, sentences

DEFAULT_MODEL = "smollm2-135m-instruct"
MARGIN = 16  # tokens kept free: text is counted piece by piece (pieces)
MIN_DOCUMENT = 64  # tokens of the document a prompt must leave room for

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # the whole call: reading the prompt and writing the answer
    first_token_seconds: float | None  # None where the backend cannot tell (a server)
    finish_reason: str  # "stop", or "length" when max_tokens cut the answer

    @property
    def cut(self) -> bool:
        return self.finish_reason == "length"

    @property
    def whole_text(self) -> str:
        """The answer, stripped, ending on a whole sentence when max_tokens cut it short."""
        text = self.text.strip()
        if self.cut and not re.search(r"[.!?…]\W*$", text):
            before, _, last = text.rpartition("\n\n")
            said = sentences(last)
            if len(said) > 1:
                text = text[: text.rfind(said[-1])].rstrip()
            elif before.strip():
                text = before.rstrip()
        return text


class ChatModel(Protocol):
    backend: str  # "llama.cpp" or "openai"
    name: str  # as the manifest records it: a packaged name, a path, or the server's name
    context: int  # tokens the model reads at once, prompt and answer together
    load_seconds: float  # what this process spent loading it for this use (0 if resident)

    def count(self, text: str) -> int:
        """Tokens in a text (exact in process; an estimate for a server)."""
        ...

    def prompt_tokens(self, messages: list[Message]) -> int:
        """Tokens of the whole prompt these messages make, chat template included."""
        ...

    def generate(
        self,
        messages: list[Message],
        *,
        schema: dict[str, Any] | None,
        temperature: float,
        max_tokens: int,
        seed: int,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        """One answer; with `schema`, JSON text that the decoder was constrained to.
        `on_text` hears the answer's text as it is written, piece by piece."""
        ...


def open_model(
    model: str | None,
    server: str | None,
    *,
    n_ctx: int,
    threads: int | None = None,
    writing_threads: int | None = None,
    device: str = "cpu",
    timeout: float = 300.0,
    api_key_env: str | None = None,
) -> ChatModel:
    """The model a rule or a command names: a server's when `server` is given (then `model`
    is the server's name for it), else a GGUF loaded here (a packaged name or a path)."""
    if server is not None:
        from caixa.pipelines.llm.openai_api import ServerModel

        key = os.environ.get(api_key_env) if api_key_env else None
        return ServerModel(server, model, context=n_ctx, timeout=timeout, api_key=key)
    from caixa.pipelines.llm.llama import LlamaModel

    threads = threads or default_threads()
    return LlamaModel(
        model or DEFAULT_MODEL,
        n_ctx=n_ctx,
        threads=threads,
        device=device,
        writing_threads=writing_threads,
    )


def default_threads() -> int:
    """Half the CPUs this process may use. llama.cpp's threads wait for each other at every
    layer, so one that another process holds stalls them all: on a busy 2-core machine one
    thread wrote 6-11 tokens/s and two wrote 1.1-2.3 (idle: 40 against 63-80). caixa's CPU
    lanes keep the other cores busy while the accelerator lane runs a model."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


def writing_threads(budget: int) -> int:
    """The threads llama.cpp writes an answer with, given a step's budget: llama-cpp-python's
    own default (half the machine's CPUs) within the budget; reading the prompt, plain compute,
    takes the whole budget. Writing waits for memory and for every thread at each token: on 2
    cores, 2 writing threads wrote 1.6x as fast as one on an idle machine, but 0.27x under
    other processes' load (bench/budget.py), where one thread held its own."""
    return max(1, min(budget, (os.cpu_count() or 1) // 2))


def pieces(text: str, budget: int, count: Callable[[str], int]) -> list[str]:
    """The text in parts of at most `budget` tokens (as `count` counts them), cut between
    paragraphs where they fit, else between sentences, else between words; [text] when it
    fits whole. Each unit is counted alone, so a part may be off by a token per unit: callers
    keep a margin."""
    if count(text) <= budget:
        return [text]
    parts: list[str] = []
    current, used = "", 0
    for unit, starts in _units(text, budget, count):
        size = count(unit) + 1
        if current and used + size > budget:
            parts.append(current)
            current, used = "", 0
        joint = "\n\n" if starts else " "
        current = f"{current}{joint}{unit}" if current else unit
        used += size
    if current:
        parts.append(current)
    return parts


def _units(text: str, budget: int, count: Callable[[str], int]) -> Iterator[tuple[str, bool]]:
    """(sentence, starts a paragraph); a sentence over the budget comes in runs of words."""
    for para in paragraphs(text):
        first = True
        for sentence in sentences(para):
            for piece in _words(sentence, budget, count):
                yield piece, first
                first = False


def _words(sentence: str, budget: int, count: Callable[[str], int]) -> Iterator[str]:
    if count(sentence) < budget:
        yield sentence
        return
    run, used = "", 0
    for whole in sentence.split():
        for word in _cut(whole, budget, count):
            size = count(word) + 1
            if run and used + size >= budget:
                yield run
                run, used = "", 0
            run = f"{run} {word}" if run else word
            used += size
    if run:
        yield run


def _cut(word: str, budget: int, count: Callable[[str], int]) -> list[str]:
    """A "word" over the budget (a base64 blob, a URL) in slices short enough: a character
    is at most ~3 byte-level tokens."""
    if count(word) < budget:
        return [word]
    step = max(1, budget // 3)
    return [word[i : i + step] for i in range(0, len(word), step)]


VALUES = frozenset({"enum", "const", "default", "examples"})  # JSON values, not schemas


def typed_branches(schema: Any) -> Any:
    """The same schema with `type: [a, b]` as `anyOf` branches that each keep the other
    keywords. llama.cpp's schema-to-grammar converter (in process, and in the servers built on
    llama.cpp: its own, llama-cpp-python's, Ollama) turns a list of types into bare types,
    dropping their pattern, enum or maxLength: a nullable date came back as "30 April 2024"
    against its pattern."""
    if isinstance(schema, list):
        return [typed_branches(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: v if k in VALUES else typed_branches(v) for k, v in schema.items()}
    types = out.get("type")
    if not isinstance(types, list):
        return out
    rest = {k: v for k, v in out.items() if k != "type"}
    return {"anyOf": [{**rest, "type": t} for t in types]}


def conversation(system: str, user: str, extra: str | None = None) -> list[Message]:
    """A system and a user message; `extra` is a rule's own words added to the instructions."""
    instructions = f"{system}\n\n{extra.strip()}" if extra else system
    return [{"role": "system", "content": instructions}, {"role": "user", "content": user}]


def room(model: ChatModel, prompt: list[Message], answer: int, beside: str) -> int:
    """Tokens left for the document or sources in `prompt` (their place empty) and an answer
    of `answer` tokens; a context too small for anything useful is refused."""
    budget = model.context - model.prompt_tokens(prompt) - answer - MARGIN
    if budget < MIN_DOCUMENT:
        raise StepError(
            f"a context of {model.context} tokens leaves no room for {beside} and an answer "
            f"of {answer} tokens: raise n_ctx or lower max_tokens"
        )
    return budget
