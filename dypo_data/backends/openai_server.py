"""OpenAI-compatible server backend: /v1/chat/completions on one or more servers.

Requests are spread over the base URLs, each call going to the server with the fewest calls in
flight (ties: round robin); a server that failed is skipped for `cooldown_s`, and a retried call goes
to a server it has not failed on yet, if there is one. At most
`max_concurrency` calls are in flight in total. Connection errors, timeouts, 5xx and 429 answers are
retried with exponential backoff on whichever server is best then; other 4xx answers fail at once.

The HTTP work runs on an asyncio loop in a background thread, so `generate` can yield each
request's result as soon as its samples are in.

Seeds: with `SamplingConfig.seed` set, each sample is its own call with `n=1` and the seed
`sample_seed(seed, key, i)`, the same seeds the vLLM engine backend uses. With `seed=None` a request
is one call with its `n`.

vLLM extensions (on by default, `vllm_extensions=False` for other servers): `return_token_ids`
(prompt and completion token ids), `return_tokens_as_token_ids` with logprobs, and `chat_template`
when the model spec overrides it. Without them `num_tokens` comes from the usage counts (split
evenly when one call returns several choices) and no token ids are returned.

On CPU, a vLLM server crashes on seeded requests when chunked prefill splits a prompt: start it with
`--no-enable-chunked-prefill --max-num-batched-tokens N` (N >= the model length), as
`server_command` does. The server decides which logprobs it reports (`--logprobs-mode`); the
backend assumes it matches `ModelSpec.logprobs_mode` (`server_command` passes it).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dypo_data.backends.base import (
    BackendBase,
    Completion,
    GenerationRequest,
    GenerationResult,
    ModelSpec,
    SamplingConfig,
    check_requests,
    sample_seed,
)
from dypo_data.errors import BackendError, ConfigError

log = logging.getLogger(__name__)

RETRY_STATUS = {429, 500, 502, 503, 504}
START_HINT = (
    "start it with: python -m vllm.entrypoints.openai.api_server --model DIR --host HOST --port PORT "
    "--enforce-eager, or fix the URL"
)
_DONE = object()


def normalise_url(url: str) -> str:
    """`http://host:port` or `.../v1` -> `http://host:port/v1`."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"base URL {url!r} must start with http:// or https://",
                          "pass the server's URL, e.g. --base-url http://127.0.0.1:8000/v1")
    return url if url.endswith("/v1") else url + "/v1"


@dataclass
class ServerState:
    url: str
    in_flight: int = 0
    down_until: float = 0.0
    sent: int = 0
    ok: int = 0
    failed: int = 0
    last_error: str = ""


class _Retryable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)


@dataclass
class _Call:
    """One HTTP call: `n` samples of a request starting at `first_idx`, with `seed` (or None)."""

    request: GenerationRequest
    first_idx: int
    n: int
    seed: int | None


@dataclass
class _Progress:
    request: GenerationRequest
    started: float
    completions: dict[int, Completion] = field(default_factory=dict)
    prompt_token_ids: list[int] | None = None


class OpenAIBackend(BackendBase):
    """Chat completions from OpenAI-compatible servers; see the module docstring."""

    kind = "openai"

    def __init__(
        self,
        model: ModelSpec,
        *,
        base_urls: str | Sequence[str],
        api_key: str | None = None,
        max_concurrency: int = 64,
        timeout_s: float = 600.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        cooldown_s: float = 5.0,
        wait_ready_s: float = 0.0,
        vllm_extensions: bool = True,
    ) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ConfigError("base_urls is empty", "give at least one server URL, e.g. http://127.0.0.1:8000/v1")
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0 or backoff_s < 0 or cooldown_s < 0:
            raise ConfigError(
                "max_concurrency must be >= 1, max_retries >= 0, timeout_s > 0, backoff_s and cooldown_s >= 0"
            )
        self.model = model
        self.servers = [ServerState(normalise_url(u)) for u in urls]
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.cooldown_s = cooldown_s
        self.vllm_extensions = vllm_extensions
        self._round_robin = itertools.count()
        self.served_model = self._probe(wait_ready_s)

    # -- startup --------------------------------------------------------------------------------

    def _probe(self, wait_ready_s: float) -> str:
        """Ask every server for its models; at least one must answer. Returns the model name to send."""
        import httpx

        deadline = time.monotonic() + wait_ready_s
        served: dict[str, list[str]] = {}
        while True:
            for server in self.servers:
                if server.url in served:
                    continue
                try:
                    reply = httpx.get(f"{server.url}/models", headers=self.headers, timeout=10.0)
                    reply.raise_for_status()
                    served[server.url] = [m["id"] for m in reply.json().get("data", [])]
                except (httpx.HTTPError, ValueError) as exc:
                    server.last_error = f"{type(exc).__name__}: {exc}"
            if len(served) == len(self.servers) or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if not served:
            names = ", ".join(f"{s.url} ({s.last_error})" for s in self.servers)
            raise BackendError(f"no OpenAI-compatible server answers at {names}", START_HINT)
        for server in self.servers:
            if server.url not in served:
                log.warning("server %s does not answer (%s); it is tried again later", server.url, server.last_error)
                server.down_until = time.monotonic() + self.cooldown_s
        return self._pick_model_name(served)

    def _pick_model_name(self, served: dict[str, list[str]]) -> str:
        names = sorted({name for ids in served.values() for name in ids})
        for wanted in (self.model.path, self.model.name):
            if all(wanted in ids for ids in served.values()):
                return wanted
        if len(names) == 1:
            log.info("model %r is not served by that name; sending the only served model, %r", self.model.path, names[0])
            return names[0]
        raise BackendError(
            f"the servers do not all serve model {self.model.path!r}; they serve {', '.join(names) or 'nothing'}",
            "set the model path to one served name, or start every server with the same --served-model-name",
        )

    # -- generation -----------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> Iterator[GenerationResult]:
        check_requests(requests)
        results: queue.Queue = queue.Queue()
        stop = threading.Event()
        worker = threading.Thread(
            target=lambda: asyncio.run(self._run(list(requests), sampling, results, stop)),
            name="dypo-openai-client",
            daemon=True,
        )
        worker.start()
        try:
            while True:
                item = results.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()

    async def _run(self, requests: list[GenerationRequest], sampling: SamplingConfig, results: queue.Queue, stop: threading.Event) -> None:
        import httpx

        try:
            limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
            timeout = httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s))
            async with httpx.AsyncClient(limits=limits, timeout=timeout, headers=self.headers) as client:
                gate = asyncio.Semaphore(self.max_concurrency)
                tasks = [asyncio.create_task(self._request(client, gate, r, sampling)) for r in requests]
                watcher = asyncio.create_task(_wait_for(stop))
                try:
                    pending = set(tasks) | {watcher}
                    while len(pending) > 1:
                        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                        if watcher in done:
                            break
                        for task in done:
                            results.put(task.result())  # re-raises a failed request's error
                finally:
                    for task in tasks + [watcher]:
                        task.cancel()
                    await asyncio.gather(*tasks, watcher, return_exceptions=True)
        except BaseException as exc:  # hand every failure to the consuming thread
            results.put(exc if isinstance(exc, Exception) else BackendError(f"client stopped: {exc!r}"))
        finally:
            results.put(_DONE)

    async def _request(self, client, gate: asyncio.Semaphore, request: GenerationRequest, sampling: SamplingConfig) -> GenerationResult:
        progress = _Progress(request, time.perf_counter())
        first = request.sample_offset
        if sampling.seed is None:
            calls = [_Call(request, first, request.n, None)]
        else:
            calls = [_Call(request, i, 1, sample_seed(sampling.seed, request.key, i)) for i in range(first, first + request.n)]
        replies = await asyncio.gather(*(self._call(client, gate, call, sampling) for call in calls))
        for call, reply in zip(calls, replies):
            self._collect(progress, call, reply, sampling)
        return GenerationResult(
            key=request.key,
            completions=[progress.completions[i] for i in sorted(progress.completions)],
            prompt_token_ids=progress.prompt_token_ids,
            seconds=time.perf_counter() - progress.started,
        )

    def body(self, call: _Call, sampling: SamplingConfig) -> dict[str, Any]:
        """The JSON body of one chat completion call."""
        body: dict[str, Any] = {
            "model": self.served_model,
            "messages": call.request.messages,
            "n": call.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if call.seed is not None:
            body["seed"] = call.seed
        if sampling.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = 0
        if self.vllm_extensions:
            body["return_token_ids"] = True
            if sampling.logprobs:
                body["return_tokens_as_token_ids"] = True
            if self.model.chat_template is not None:
                body["chat_template"] = self.model.chat_template
        elif self.model.chat_template is not None:
            raise ConfigError("a chat_template override needs a vLLM server (vllm_extensions=True)")
        return body

    async def _call(self, client, gate: asyncio.Semaphore, call: _Call, sampling: SamplingConfig) -> dict:
        """POST one call, retrying transient failures with exponential backoff."""
        import httpx

        body = self.body(call, sampling)
        tried: list[str] = []
        failed_on: set[str] = set()  # servers that failed this call: retries go elsewhere first
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * (1 + random.random() / 4))
            async with gate:
                server = self._choose(avoid=failed_on)
                server.in_flight += 1
                server.sent += 1
                try:
                    reply = await client.post(f"{server.url}/chat/completions", json=body)
                    if reply.status_code in RETRY_STATUS:
                        raise _Retryable(f"HTTP {reply.status_code}: {reply.text[:200]}")
                    if reply.status_code >= 400:
                        raise BackendError(
                            f"server {server.url} refused request {call.request.key!r}: HTTP {reply.status_code}: {reply.text[:500]}",
                            "check the prompt length against the server's --max-model-len and the sampling settings",
                        )
                    data = reply.json()
                    server.ok += 1
                    return data
                except (httpx.TransportError, _Retryable, ValueError) as exc:
                    server.failed += 1
                    server.last_error = f"{type(exc).__name__}: {exc}"
                    server.down_until = time.monotonic() + self.cooldown_s
                    tried.append(f"{server.url} ({server.last_error})")
                    failed_on.add(server.url)
                    log.debug("call for %r failed on %s: %s", call.request.key, server.url, server.last_error)
                finally:
                    server.in_flight -= 1
        raise BackendError(
            f"request {call.request.key!r} failed after {len(tried)} attempts: " + "; ".join(dict.fromkeys(tried)),
            f"check that the servers are up and not overloaded; {START_HINT}",
        )

    def _choose(self, avoid: set[str]) -> ServerState:
        """The server with the fewest calls in flight among those not cooling down and not in
        `avoid`; failing that, among those not cooling down; failing that, the first to recover."""
        now = time.monotonic()
        live = [s for s in self.servers if s.down_until <= now]
        candidates = [s for s in live if s.url not in avoid] or live
        if not candidates:
            return min(self.servers, key=lambda s: s.down_until)
        turn = next(self._round_robin)
        order = {id(s): (i - turn) % len(self.servers) for i, s in enumerate(self.servers)}
        return min(candidates, key=lambda s: (s.in_flight, order[id(s)]))

    def _collect(self, progress: _Progress, call: _Call, reply: dict, sampling: SamplingConfig) -> None:
        choices = sorted(reply.get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != call.n:
            raise BackendError(f"server returned {len(choices)} choices for {call.n} samples of {call.request.key!r}")
        if reply.get("prompt_token_ids") is not None:
            progress.prompt_token_ids = list(reply["prompt_token_ids"])
        usage = reply.get("usage") or {}
        for offset, choice in enumerate(choices):
            idx = call.first_idx + offset
            progress.completions[idx] = _completion(choice, idx, sampling.logprobs, usage, len(choices))

    def stats(self) -> list[dict[str, Any]]:
        """Calls sent, succeeded and failed per server."""
        return [
            {"url": s.url, "sent": s.sent, "ok": s.ok, "failed": s.failed, "last_error": s.last_error}
            for s in self.servers
        ]

    def close(self) -> None:
        pass  # every generate() call opens and closes its own connections


def _completion(choice: dict, idx: int, with_logprobs: bool, usage: dict, num_choices: int) -> Completion:
    token_ids = choice.get("token_ids")
    content = ((choice.get("logprobs") or {}).get("content")) or []
    if token_ids is None and content and all(str(c.get("token", "")).startswith("token_id:") for c in content):
        token_ids = [int(c["token"].split(":", 1)[1]) for c in content]
    if token_ids is not None:
        num_tokens = len(token_ids)
    elif content:
        num_tokens = len(content)
    else:  # a server without token ids: the usage count, shared when one call returned several choices
        num_tokens = int(usage.get("completion_tokens", 0)) // max(1, num_choices)
    completion = Completion(
        text=(choice.get("message") or {}).get("content") or "",
        finish_reason=choice.get("finish_reason"),
        num_tokens=num_tokens,
        sample_idx=idx,
    )
    if with_logprobs:
        completion.token_ids = list(token_ids) if token_ids is not None else None
        completion.logprobs = [float(c["logprob"]) for c in content]
    return completion


async def _wait_for(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.05)
