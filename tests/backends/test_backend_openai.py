"""The OpenAI-compatible server backend against a real vLLM server on loopback (tiny model)."""

from __future__ import annotations

import math

import pytest

from dypo_data.backends import GenerationRequest, ModelSpec, SamplingConfig, make_backend
from dypo_data.backends.server_process import LocalServer, free_port
from dypo_data.errors import BackendError


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def spec(tiny_spec):
    return tiny_spec


@pytest.fixture(scope="module")
def server(tiny_spec, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "vllm-server.log"
    with LocalServer(tiny_spec, log_path=log, startup_timeout_s=240) as running:
        yield running


def test_spreads_over_servers_and_retries_a_dead_one(server, spec):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    urls = [server.base_url, f"http://localhost:{server.port}", dead]  # the same server twice, and a dead URL
    backend = make_backend("openai", spec, base_urls=urls, cooldown_s=0, backoff_s=0.01, max_concurrency=8)
    requests = [GenerationRequest(key=f"p{i}", messages=chat(f"Problem {i}"), n=3) for i in range(8)]
    results = {r.key: r for r in backend.generate(requests, SamplingConfig(max_tokens=16, logprobs=True))}
    assert results.keys() == {r.key for r in requests}
    for result in results.values():
        assert [c.sample_idx for c in result.completions] == [0, 1, 2]
        assert result.prompt_token_ids and result.prompt_token_ids[0] == 1  # <|im_start|>
        for c in result.completions:
            assert len(c.token_ids) == len(c.logprobs) == c.num_tokens >= 1
            assert all(math.isfinite(x) and x <= 0 for x in c.logprobs)
    stats = {s["url"]: s for s in backend.stats()}
    live = [stats[u] for u in (server.base_url, f"http://localhost:{server.port}/v1")]
    assert all(s["ok"] > 0 for s in live)  # both names of the live server got work
    assert stats[dead]["ok"] == 0 and stats[dead]["failed"] > 0  # the dead one was tried, then retried elsewhere
    assert sum(s["ok"] for s in live) == 24  # one call per seeded sample


def test_same_samples_as_the_engine_backend(server, spec, tiny_vllm):
    """Per-sample seeds make the server and the offline engine draw the same tokens (fp32)."""
    requests = [GenerationRequest(key=f"p{i}", messages=chat(f"Q{i}: 2+{i}?"), n=2, sample_offset=i) for i in range(3)]
    sampling = SamplingConfig(max_tokens=12, logprobs=True, seed=11)
    served = {r.key: r for r in make_backend("openai", spec, base_urls=[server.base_url]).generate(requests, sampling)}
    local = {r.key: r for r in tiny_vllm.generate(requests, sampling)}
    for key in local:
        assert served[key].prompt_token_ids == local[key].prompt_token_ids
        assert [c.token_ids for c in served[key].completions] == [c.token_ids for c in local[key].completions]
        for a, b in zip(served[key].completions, local[key].completions):
            assert a.text == b.text
            assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-4


def test_unseeded_requests_use_one_call_with_n(server, spec):
    backend = make_backend("openai", spec, base_urls=[server.base_url])
    (result,) = backend.generate([GenerationRequest("a", chat("hi"), n=4)], SamplingConfig(max_tokens=8, seed=None))
    assert len(result.completions) == 4 and all(c.num_tokens >= 1 for c in result.completions)
    assert backend.stats()[0]["ok"] == 1


def test_unreachable_server_names_the_url_and_the_fix():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendError) as info:
        make_backend("openai", ModelSpec(name="m", path="m"), base_urls=[url])
    assert url in str(info.value)
    assert "vllm.entrypoints.openai.api_server" in info.value.hint


def test_a_refused_request_fails_at_once(server, spec):
    backend = make_backend("openai", spec, base_urls=[server.base_url], max_retries=3)
    too_long = GenerationRequest("long", chat("x" * 5000), n=1)  # the tiny model takes 4096 tokens
    with pytest.raises(BackendError, match="HTTP 400"):
        list(backend.generate([too_long], SamplingConfig(max_tokens=8)))
    assert backend.stats()[0]["sent"] == 1  # not retried


def test_the_served_model_name_is_found(server, spec):
    backend = make_backend("openai", ModelSpec(name="teacher-a", path="teacher-a"), base_urls=[server.base_url + "/"])
    assert backend.served_model == "tiny"  # the only model served; traces still record "teacher-a"
    assert make_backend("openai", spec, base_urls=[server.base_url]).served_model == "tiny"
