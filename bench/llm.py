"""LLM generation: tokens/s of the llm step (task `prompt`, SmolLM2-135M-Instruct in process)
against a plain llama-cpp-python `Llama.create_completion` in the same run, with the same
prompt tokens (the step's own, chat template applied), the same settings (greedy, same
max_tokens, threads and context) and so the same answer, token for token.

Both sides read the whole prompt every round (their KV caches are reset first: a reused cache
would let a side skip the prompt), and each side's best round counts, since other work on a
shared machine can only slow a round down; CPU time per token is reported too (threads
waiting for a core held elsewhere burn no CPU time, so it moves less with the machine's load). The step is timed from run() to its return: reading
the file, laying out the prompt, generating, writing the Markdown. Time to first token: the
step's own figure (its manifest's first_token_seconds), against the first chunk of a streamed
create_completion.

Target: step >= 0.95x the plain call.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _common import ratio, save

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from caixa import models
from caixa.pipelines.base import StepInput
from caixa.pipelines.llm.chat import default_threads
from caixa.pipelines.llm.llama import LlamaModel
from caixa.pipelines.llm.step import LlmParams, LlmStep

MODEL = "smollm2-135m-instruct"
PROMPT = "Write a detailed essay on the history of bread, from ancient Egypt to modern bakeries."
MAX_TOKENS = 256
N_CTX = 2048
ROUNDS = 7
TARGET = 0.95


def main() -> None:
    from llama_cpp import Llama

    threads = default_threads()
    params = LlmParams(task="prompt", temperature=0.0, max_tokens=MAX_TOKENS, n_ctx=N_CTX)
    ours = LlamaModel(MODEL, n_ctx=N_CTX, threads=threads)
    tokens, stop = ours.prompt([{"role": "user", "content": PROMPT}])
    plain = Llama(
        model_path=str(models.locate(MODEL)),
        n_ctx=N_CTX,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    best = {"step": float("inf"), "plain": float("inf")}
    cpu = {"step": float("inf"), "plain": float("inf")}
    first = {"step": float("inf"), "plain": float("inf")}
    made: dict[str, tuple[int, str]] = {}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="caixa-bench-llm-") as tmp:
        root = Path(tmp)
        (root / "essay.prompt").write_text(PROMPT)
        for r in range(ROUNDS):
            ours.llama.reset()
            work = root / f"step-{r}"
            work.mkdir()
            job = StepInput(
                f"bench-{r}", "bench", root / "essay.prompt", "essay.prompt", "text/plain",
                (), work, root / "home",
            )  # fmt: skip
            start, start_cpu = time.perf_counter(), time.process_time()
            result = LlmStep().run(job, params)
            best["step"] = min(best["step"], time.perf_counter() - start)
            cpu["step"] = min(cpu["step"], time.process_time() - start_cpu)
            first["step"] = min(first["step"], result.data["first_token_seconds"])
            text = result.artifacts[0].path.read_text(encoding="utf-8").strip()
            made["step"] = (result.data["completion_tokens"], text)

            plain.reset()
            start, start_cpu = time.perf_counter(), time.process_time()
            done = plain.create_completion(
                tokens, max_tokens=MAX_TOKENS, temperature=0.0, seed=0, stop=stop
            )
            best["plain"] = min(best["plain"], time.perf_counter() - start)
            cpu["plain"] = min(cpu["plain"], time.process_time() - start_cpu)
            made["plain"] = (done["usage"]["completion_tokens"], done["choices"][0]["text"].strip())

            plain.reset()
            start = time.perf_counter()
            for _ in plain.create_completion(
                tokens, max_tokens=MAX_TOKENS, temperature=0.0, seed=0, stop=stop, stream=True
            ):
                first["plain"] = min(first["plain"], time.perf_counter() - start)
                break
    count = made["step"][0]
    same = count == made["plain"][0] and made["plain"][1].startswith(made["step"][1])
    assert same, "the step and the plain call wrote different answers"  # the step ends on a
    # whole sentence, so its text is the plain one's up to there
    rate = {name: count / seconds for name, seconds in best.items()}
    figures = {
        "model": MODEL,
        "prompt_tokens": len(tokens),
        "completion_tokens": count,
        "threads": threads,
        "n_ctx": N_CTX,
        "rounds": ROUNDS,
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_at_start": round(load, 2),
        "tokens_per_s": {name: round(r, 1) for name, r in rate.items()},
        "cpu_ms_per_token": {name: round(1000 * c / count, 2) for name, c in cpu.items()},
        "first_token_s": {name: round(s, 3) for name, s in first.items()},
        "ratio_to_plain": ratio(rate["step"], rate["plain"]),
        "cpu_ratio_to_plain": ratio(cpu["plain"], cpu["step"]),
        "target_met": rate["step"] / rate["plain"] >= TARGET,
    }
    print(
        f"llm: {MODEL}, {len(tokens)}-token prompt, {count} tokens written (greedy, the same "
        f"answer both ways), {threads} threads, best of {ROUNDS} rounds "
        f"(load average {load:.2f} at start)"
    )
    print(
        f"  llm step (task prompt, file to Markdown): {rate['step']:.1f} tokens/s, "
        f"first token {first['step']:.3f} s"
    )
    print(
        f"  plain Llama.create_completion: {rate['plain']:.1f} tokens/s, first token "
        f"{first['plain']:.3f} s (streamed)"
    )
    print(
        f"  CPU ms/token: step {1000 * cpu['step'] / count:.2f}, plain "
        f"{1000 * cpu['plain'] / count:.2f} (ratio {figures['cpu_ratio_to_plain']}x: it does "
        "not depend on what else runs)"
    )
    met = "MET" if figures["target_met"] else "NOT MET"
    print(f"  ratio step/plain {figures['ratio_to_plain']}x (target >= {TARGET}x): {met}")
    save("llm", figures)


if __name__ == "__main__":
    main()
