"""llama-cpp-python in this process: a GGUF loaded once per process (caixa.models.load), the
prompt laid out by the GGUF's own chat template, answers held to a JSON schema by a llama.cpp
grammar.

The template is applied here with llama-cpp-python's Jinja2ChatFormatter (what its
create_chat_completion does with a GGUF's `tokenizer.chat_template`), and the prompt goes to
create_completion as tokens. So the prompt's length is known exactly before it is read (to fit
a document in the context), and a base model without a template gets a plain layout instead
of llama-cpp-python's fallback, the llama-2 chat format, which a base model never saw.
"""

from __future__ import annotations

import atexit
import codecs
import json
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caixa import models
from caixa.errors import StepError
from caixa.pipelines.llm.chat import Generation, Message

if TYPE_CHECKING:
    import numpy as np
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

TEMPLATE_KEY = "tokenizer.chat_template"


@dataclass(frozen=True)
class Loaded:
    llama: Llama
    template: Jinja2ChatFormatter | None  # None: a base model, laid out plainly
    seconds: float


class LlamaModel:
    backend = "llama.cpp"

    def __init__(
        self,
        ref: str,
        *,
        n_ctx: int,
        threads: int,
        device: str = "cpu",
        writing_threads: int | None = None,
    ) -> None:
        try:
            path = models.locate(ref)
        except models.ModelNotFoundError as exc:
            raise StepError(f"LLM model: {exc}") from exc
        self.name = ref
        self.context = n_ctx
        # set on the context at each call, so one loaded model serves any budget: `threads`
        # read the prompt, `writing` write the answer
        self.threads, self.writing = threads, writing_threads or threads
        gpu_layers = 0 if device == "cpu" else -1  # all layers, where the build has a GPU
        main_gpu = int(device.split(":", 1)[1]) if ":" in device else 0
        key = f"llama.cpp:{path.resolve()}:{n_ctx}:{gpu_layers}:{main_gpu}"
        started = time.perf_counter()
        self._model = models.load(
            key, lambda: _load(path, n_ctx, (self.writing, threads), gpu_layers, main_gpu)
        )
        resident = time.perf_counter() - started < self._model.seconds
        self.load_seconds = 0.0 if resident else round(self._model.seconds, 3)

    @property
    def llama(self) -> Llama:
        return self._model.llama

    @property
    def has_template(self) -> bool:
        return self._model.template is not None

    def count(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def prompt(self, messages: list[Message]) -> tuple[list[int], list[str]]:
        """The prompt's tokens and the stop strings its template adds."""
        template = self._model.template
        if template is None:
            return self._tokens(plain_prompt(messages), add_bos=True), []
        laid = template(messages=messages)
        stop = [laid.stop] if isinstance(laid.stop, str) else list(laid.stop or [])
        return self._tokens(laid.prompt, add_bos=not laid.added_special), stop

    def prompt_tokens(self, messages: list[Message]) -> int:
        return len(self.prompt(messages)[0])

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
        tokens, stop = self.prompt(messages)
        if len(tokens) + max_tokens > self.context:
            raise StepError(
                f"the prompt ({len(tokens)} tokens) and the answer ({max_tokens}) do not fit in "
                f"the context of {self.context} tokens: raise n_ctx or lower max_tokens"
            )
        self._use_threads()
        clock = FirstToken(self.llama, len(tokens), on_text)
        try:
            done = self.llama.create_completion(
                tokens,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
                stop=stop,
                grammar=grammar(schema) if schema is not None else None,
                stopping_criteria=clock.criteria(),
            )
        except (ValueError, RuntimeError) as exc:
            raise StepError(f"llama.cpp failed to generate: {exc}") from exc
        seconds = time.perf_counter() - clock.started
        usage, choice = done["usage"], done["choices"][0]  # type: ignore[index]
        return Generation(
            text=choice["text"],
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            seconds=seconds,
            first_token_seconds=clock.seconds,
            finish_reason=choice["finish_reason"] or "stop",
        )

    def _use_threads(self) -> None:
        """This call's threads: the lane's budget changes from step to step, and llama.cpp
        takes new counts without a reload."""
        from llama_cpp import llama_set_n_threads

        llama, counts = self.llama, (self.writing, self.threads)
        if (llama.n_threads, llama.n_threads_batch) != counts:
            llama_set_n_threads(llama.ctx, *counts)
            llama.n_threads, llama.n_threads_batch = counts
            llama.context_params.n_threads, llama.context_params.n_threads_batch = counts

    def _tokens(self, text: str, add_bos: bool) -> list[int]:
        return self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)


def plain_prompt(messages: list[Message]) -> str:
    """A layout any base model can continue: the instructions, the text, then where the
    answer goes."""
    body = "\n\n".join(m["content"].strip() for m in messages if m["role"] != "assistant")
    return f"{body}\n\nAnswer:\n"


class FirstToken:
    """When the first token came, and the text as it is written: llama-cpp-python calls
    stopping criteria once per token sampled, with the tokens so far, so the first call marks
    the prompt read and one token made, and each call shows the tokens past the prompt that
    were not shown yet (a token late: the last one comes with the whole answer)."""

    def __init__(
        self,
        llama: Llama | None = None,
        prompt_length: int = 0,
        on_text: Callable[[str], None] | None = None,
    ) -> None:
        self.started = time.perf_counter()
        self.seconds: float | None = None
        self.llama = llama
        self.on_text = on_text
        self._shown = prompt_length
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")  # a character may span tokens

    def criteria(self) -> list[Any]:
        from llama_cpp import StoppingCriteriaList

        return StoppingCriteriaList([self._seen])

    def _seen(self, ids: np.ndarray, _logits: np.ndarray) -> bool:
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.started
        if self.on_text is not None and self.llama is not None and len(ids) > self._shown:
            new = [int(t) for t in ids[self._shown :]]
            self._shown = len(ids)
            if text := self._utf8.decode(self.llama.detokenize(new, special=False)):
                self.on_text(text)
        return False


def grammar(schema: dict[str, Any]) -> Any:
    """A llama.cpp grammar that only lets through JSON valid under `schema` (as far as its
    converter goes: numeric bounds, multipleOf, uniqueItems and most formats are left to the
    validation after)."""
    from llama_cpp import LlamaGrammar

    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except (ValueError, KeyError, TypeError, NotImplementedError) as exc:
        raise StepError(f"llama.cpp cannot turn this JSON Schema into a grammar: {exc}") from exc


def _load(
    path: Path, n_ctx: int, threads: tuple[int, int], gpu_layers: int, main_gpu: int
) -> Loaded:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    started = time.perf_counter()
    try:
        llama = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads[0],
            n_threads_batch=threads[1],
            n_gpu_layers=gpu_layers,
            main_gpu=main_gpu,
            verbose=False,
        )
    except (ValueError, RuntimeError) as exc:
        raise StepError(
            f"llama.cpp cannot load {path}: {exc}; is it a GGUF file this llama-cpp-python "
            "version reads?"
        ) from exc
    atexit.register(_close, weakref.ref(llama))
    source = llama.metadata.get(TEMPLATE_KEY, "")
    template = None
    if source.strip():
        eos, bos = llama.token_eos(), llama.token_bos()
        template = Jinja2ChatFormatter(
            template=source,
            eos_token=_text(llama, eos),
            bos_token=_text(llama, bos),
            stop_token_ids=[eos],
        )
    return Loaded(llama, template, time.perf_counter() - started)


def _text(llama: Llama, token: int) -> str:
    return llama.detokenize([token], special=True).decode("utf-8") if token != -1 else ""


def _close(ref: weakref.ref[Llama]) -> None:
    """Free a model still loaded at exit while llama-cpp-python can: its own __del__ runs
    after the interpreter has torn its module down, and prints a TypeError on every exit.
    (A weak reference: models.unload must still be able to free it before then.)"""
    llama = ref()
    if llama is not None:
        llama.close()
