"""One loaded GGUF serves every thread budget the accelerator lane gives: llama.cpp takes new
counts per call, so a step on every core and the next on the lane's share share one model."""

from __future__ import annotations

from caixa import models
from caixa.pipelines.llm.llama import LlamaModel

MODEL = "smollm2-135m-instruct"
ASK = [{"role": "user", "content": "Name one colour."}]


def test_a_new_budget_reuses_the_loaded_model_and_sets_its_threads() -> None:
    models.unload()
    share = LlamaModel(MODEL, n_ctx=512, threads=1)
    first = share.generate(ASK, schema=None, temperature=0.0, max_tokens=8, seed=0)
    whole = LlamaModel(MODEL, n_ctx=512, threads=2, writing_threads=1)
    second = whole.generate(ASK, schema=None, temperature=0.0, max_tokens=8, seed=0)

    assert whole.llama is share.llama and whole.load_seconds == 0  # not loaded again
    assert (whole.llama.n_threads, whole.llama.n_threads_batch) == (1, 2)
    assert first.completion_tokens > 0 and second.completion_tokens > 0
    share.generate(ASK, schema=None, temperature=0.0, max_tokens=8, seed=0)
    assert (share.llama.n_threads, share.llama.n_threads_batch) == (1, 1)  # the share again
    models.unload()
