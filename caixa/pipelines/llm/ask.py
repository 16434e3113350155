"""Questions answered from your own files: `caixa ask "..."`, and `*.ask` files dropped into an
inbox whose rule runs the llm step's `ask` task.

The question is searched through a finder: `retrieve.search`, exactly as `caixa search` searches (its words and its
meaning, in Portuguese and English). The best passages, as many as fit the model's context, are
given to the model numbered, and it answers from them citing [n]. Under the answer come the
files and pages of every passage it was given, the ones it cited marked, so that a reader can
check the answer against the documents.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from caixa.errors import StepError
from caixa.pipelines.common.language import detect
from caixa.pipelines.common.language import name as language_name
from caixa.pipelines.common.timecode import clock
from caixa.pipelines.index.retrieve import Finder, Hit
from caixa.pipelines.llm.chat import ChatModel, Generation, Message, conversation, pieces, room

ASK = (
    "Answer the user's question in {language}, using only the numbered sources below. Cite "
    "the source of each fact as [1], [2]. If the sources do not hold the answer, say so."
    "\n\nSources:\n{sources}"
)
NOTHING = "Nothing in the index matches this question, so there is nothing to answer it from."
CITATION = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class Source:
    number: int  # as the model saw it: [1], [2]...
    file: str  # the source file's name
    page: int
    text: str  # the output whose text matched (the OCR text, a translation...)
    folder: str | None  # the job's output folder, when it has one
    cited: bool  # the answer refers to it
    start: float | None = None  # seconds into a recording where it was said; None for text

    @property
    def place(self) -> str:
        """`at 03:12` in a recording, else `page 2`."""
        return f"at {clock(self.start)}" if self.start is not None else f"page {self.page}"

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "file": self.file,
            "page": self.page,
            "start": self.start,
            "time": clock(self.start) if self.start is not None else None,
            "text": self.text,
            "folder": self.folder,
            "cited": self.cited,
        }


@dataclass(frozen=True)
class Answer:
    question: str
    text: str
    sources: list[Source]
    model: str | None  # backend:name; None (and no generation) when nothing was found
    generation: Generation | None

    @property
    def cited(self) -> list[int]:
        return [s.number for s in self.sources if s.cited]


def answer(
    find: Finder,
    question: str,
    load: Callable[[], ChatModel],
    *,
    passages: int = 5,
    max_tokens: int = 512,
    temperature: float = 0.2,
    seed: int = 0,
    system: str | None = None,
) -> Answer:
    """The answer of the model that `load` gives (called only once there are passages to
    answer from) from the best `passages` that `find` gives."""
    question = question.strip()
    if not question:
        raise StepError("the question is empty")
    hits = find(question, passages)
    if not hits:
        return Answer(question, NOTHING, [], None, None)
    model = load()
    language = language_name(detect(question).language)

    def prompt(sources: str) -> list[Message]:
        return conversation(ASK.format(language=language, sources=sources), question, system)

    budget = room(model, prompt(""), max_tokens, "sources beside the question")
    given = fit(hits, budget, model)
    done = model.generate(
        prompt("\n\n".join(f"[{n}] {text}" for n, (_, text) in enumerate(given, 1))),
        schema=None,
        temperature=temperature,
        max_tokens=max_tokens,
        seed=seed,
    )
    text = done.whole_text or "(the model wrote no answer)"
    cited = {int(n) for n in CITATION.findall(text)}
    sources = [
        Source(
            number=n,
            file=hit.document.source_name,
            page=hit.page,
            text=hit.artifact,
            folder=str(hit.folder) if hit.folder is not None else None,
            cited=n in cited,
            start=hit.start,
        )
        for n, (hit, _) in enumerate(given, 1)
    ]
    return Answer(question, text, sources, f"{model.backend}:{model.name}", done)


def fit(hits: list[Hit], budget: int, model: ChatModel) -> list[tuple[Hit, str]]:
    """The best passages that fit in `budget` tokens together, in rank order, each headed by
    its file and page; the first one cut to fit when even it alone does not."""
    given: list[tuple[Hit, str]] = []
    left = budget
    for hit in hits:
        place = f"at {hit.place}" if hit.start is not None else hit.place
        passage = f"{hit.document.source_name}, {place}: {' '.join(hit.text.split())}"
        size = model.count(passage) + 4  # its number and the blank line before it
        if size > left:
            if not given:
                given.append((hit, pieces(passage, budget - 4, model.count)[0]))
            break
        given.append((hit, passage))
        left -= size
    return given


def markdown(found: Answer) -> str:
    """The answer, then its sources as a list: file, page (or time in a recording), where its
    outputs are."""
    lines = [f"# {' '.join(found.question.split())}", "", found.text]
    if found.sources:
        lines += ["", "## Sources", ""]
        for s in found.sources:
            where = f" in `{s.folder}/`" if s.folder else ""
            text = f" ({s.text})" if s.text != s.file else ""
            mark = "" if s.cited else " (not cited)"
            lines.append(f"{s.number}. **{s.file}**{text}, {s.place}{where}{mark}")
    return "\n".join(lines) + "\n"
