"""Any OpenAI-compatible server by URL (Ollama, LocalAI, llama.cpp's server, vLLM), for users
who already run one. caixa sends chat completions to the URL a rule names, and nowhere else.

The stdlib's urllib: one POST per answer needs no client library. Proxy variables are ignored:
a server named by URL (usually on loopback or the LAN) is reached directly.

JSON answers are asked for with `response_format` in OpenAI's `json_schema` form (Ollama, vLLM,
llama.cpp's server), and in the `json_object` form with a schema (llama-cpp-python's server)
when a server refuses the first; either way the caller validates what comes back.

A server that cannot be reached, times out or is busy (429, 5xx) raises TransientError, so the
daemon retries and then fails the job with a message naming the URL; a request it refuses
(4xx) raises StepError with the server's own words.
"""

from __future__ import annotations

import http.client
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from caixa.errors import StepError, TransientError
from caixa.pipelines.llm.chat import Generation, Message

# Token counts are estimated for a server (most have no tokenize endpoint): English runs ~4
# characters a token, Portuguese ~3; the low side, so a text cut to fit does fit.
CHARS_PER_TOKEN = 3
MESSAGE_OVERHEAD = 8  # tokens a chat template adds around each message, roughly


class RefusedError(StepError):
    """The server answered the request with a 4xx: retrying the same request will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def base_url(url: str) -> str:
    """The API root: the URL as given, or with `/v1` added when it names only a host."""
    url = url.rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


def response_formats(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": True},
        },
        {"type": "json_object", "schema": schema},
    ]


def refuses_format(exc: StepError | TransientError) -> bool:
    """Whether a server turned down the form of response_format (llama-cpp-python's server
    answers a request it does not validate with a 500 that names the field)."""
    if isinstance(exc, RefusedError) and exc.status in (400, 422):
        return True
    return "response_format" in str(exc)


class ServerModel:
    backend = "openai"
    load_seconds = 0.0  # the server keeps its model loaded; caixa loads nothing

    def __init__(
        self, url: str, model: str | None, *, context: int, timeout: float, api_key: str | None
    ) -> None:
        self.url = base_url(url)
        self.context = context
        self.timeout = timeout
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._format = 0  # the response_format form this server took last
        self.name = model or self._served_model()

    def count(self, text: str) -> int:
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def prompt_tokens(self, messages: list[Message]) -> int:
        return sum(self.count(m["content"]) + MESSAGE_OVERHEAD for m in messages)

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
        """One answer, asked for whole: `on_text` hears it once, when it has come."""
        body: dict[str, Any] = {
            "model": self.name,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "seed": seed,
            "stream": False,
        }
        started = time.perf_counter()
        reply = self._post(body) if schema is None else self._structured(body, schema)
        seconds = time.perf_counter() - started
        try:
            choice = reply["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise StepError(
                f"the server at {self.url} gave no answer in the OpenAI form: {str(reply)[:300]}"
            ) from exc
        usage = reply.get("usage") or {}
        if on_text is not None and text:
            on_text(text)
        return Generation(
            text=text,
            prompt_tokens=usage.get("prompt_tokens") or self.prompt_tokens(messages),
            completion_tokens=usage.get("completion_tokens") or self.count(text),
            seconds=seconds,
            first_token_seconds=None,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        )

    def _structured(self, body: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
        """The answer held to a schema, in the first response_format form the server takes."""
        forms = response_formats(schema)
        order = [self._format, *(i for i in range(len(forms)) if i != self._format)]
        refused: StepError | TransientError | None = None
        for i in order:
            try:
                reply = self._post({**body, "response_format": forms[i]})
            except (RefusedError, TransientError) as exc:
                if not refuses_format(exc):
                    raise
                refused = exc
                continue
            self._format = i
            return reply
        raise StepError(
            f"the server at {self.url} takes no JSON schema in response_format, so it cannot "
            f"be held to the rule's labels or schema ({refused})"
        )

    def _served_model(self) -> str:
        """The first model the server lists: a server that serves one needs no name."""
        listed = self._request("GET", "/models", None).get("data") or []
        if not listed or not isinstance(listed[0], dict) or "id" not in listed[0]:
            raise StepError(
                f"the server at {self.url} lists no model at /models; name one with `model`"
            )
        return str(listed[0]["id"])

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/chat/completions", body)

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        url = self.url + path
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(url, data=data, headers=self._headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = _detail(exc)
            if exc.code in (408, 429) or exc.code >= 500:
                raise TransientError(
                    f"the LLM server at {url} is busy or failing ({exc.code}: {detail})"
                ) from exc
            raise RefusedError(
                exc.code, f"the LLM server at {url} refused the request ({exc.code}: {detail})"
            ) from exc
        except (
            urllib.error.URLError,
            TimeoutError,
            ConnectionError,
            http.client.HTTPException,
        ) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise TransientError(
                f"cannot reach the LLM server at {url}: {reason}; check that it is running and "
                "that the rule's `server` URL is right"
            ) from exc
        try:
            reply = json.loads(raw)
        except ValueError as exc:
            raise StepError(
                f"{url} is not an OpenAI-compatible API: its answer is not JSON"
            ) from exc
        if not isinstance(reply, dict):
            raise StepError(f"{url} is not an OpenAI-compatible API: it answered {raw[:200]!r}")
        return reply


def _detail(exc: urllib.error.HTTPError) -> str:
    """The server's own error message, short."""
    try:
        raw = exc.read().decode("utf-8", errors="replace")
    except OSError:
        return exc.reason or ""
    try:
        found = json.loads(raw)
        error = found.get("error", found.get("detail", found)) if isinstance(found, dict) else found
        message = error.get("message", error) if isinstance(error, dict) else error
        return " ".join(str(message).split())[:300]
    except ValueError:
        return " ".join(raw.split())[:300] or str(exc.reason)
