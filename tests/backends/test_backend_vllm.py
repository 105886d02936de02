"""The vLLM engine backend on a tiny model: counts, seeds, streaming, logprobs, errors."""

from __future__ import annotations

import math

import pytest

from dypo_data.backends import GenerationRequest, ModelSpec, SamplingConfig, make_backend
from dypo_data.backends.base import render_prompt
from dypo_data.errors import BackendError

PROBLEMS = [
    "What is 2 + 3?",
    "Compute 17 * 23.",
    "Solve for x: 2x + 6 = 10.",
    "How many primes are below 20?",
    "Simplify 12/18.",
    "What is the square root of 144?",
]


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def backend(tiny_vllm):
    return tiny_vllm


def test_yields_every_request_with_its_own_n(backend):
    requests = [GenerationRequest(key=f"p{i}", messages=chat(p), n=1 + i % 3) for i, p in enumerate(PROBLEMS)]
    requests.append(GenerationRequest(key="resumed", messages=chat("1+1?"), n=2, sample_offset=5))
    sampling = SamplingConfig(temperature=1.0, max_tokens=24)
    results = {r.key: r for r in backend.generate(requests, sampling)}
    assert results.keys() == {r.key for r in requests}
    for request in requests:
        result = results[request.key]
        assert len(result.completions) == request.n
        assert [c.sample_idx for c in result.completions] == list(range(request.sample_offset, request.sample_offset + request.n))
        assert result.prompt_token_ids == render_prompt(backend.tokenizer, request.messages, None)
        assert result.seconds > 0
        for c in result.completions:
            assert 1 <= c.num_tokens <= 24
            assert c.finish_reason in ("stop", "length")
            assert c.token_ids is None and c.logprobs is None  # not asked for


def test_logprobs_and_token_ids(backend):
    requests = [GenerationRequest(key=f"p{i}", messages=chat(p), n=3) for i, p in enumerate(PROBLEMS)]
    for result in backend.generate(requests, SamplingConfig(max_tokens=32, logprobs=True)):
        for c in result.completions:
            assert len(c.token_ids) == len(c.logprobs) == c.num_tokens
            assert all(math.isfinite(x) and x <= 0 for x in c.logprobs)
            assert c.text == backend.tokenizer.decode(c.token_ids, skip_special_tokens=True)


def test_samples_do_not_depend_on_batching_or_resumption(backend):
    sampling = SamplingConfig(max_tokens=16, logprobs=True, seed=3)
    whole = {r.key: r for r in backend.generate([GenerationRequest("a", chat("hi"), n=4), GenerationRequest("b", chat("yo"), n=1)], sampling)}
    first = list(backend.generate([GenerationRequest("a", chat("hi"), n=2)], sampling))[0]
    rest = list(backend.generate([GenerationRequest("a", chat("hi"), n=2, sample_offset=2)], sampling))[0]
    ids = [c.token_ids for c in whole["a"].completions]
    assert ids == [c.token_ids for c in first.completions + rest.completions]
    assert len({tuple(i) for i in ids}) == 4  # distinct samples
    other_seed = list(backend.generate([GenerationRequest("a", chat("hi"), n=2)], SamplingConfig(max_tokens=16, logprobs=True, seed=4)))[0]
    assert [c.token_ids for c in other_seed.completions] != ids[:2]


def test_results_stream_before_the_batch_ends(backend):
    engine = backend.llm.llm_engine
    requests = [GenerationRequest(key=f"p{i}", messages=chat(f"Problem {i}"), n=2) for i in range(16)]
    stream = backend.generate(requests, SamplingConfig(max_tokens=300))
    first = next(stream)
    assert engine.has_unfinished_requests()  # the rest is still running
    rest = list(stream)
    assert len(rest) == 15 and first.key not in {r.key for r in rest}
    lengths = [c.num_tokens for r in [first, *rest] for c in r.completions]
    assert min(lengths) < 300 == max(lengths)


def test_stopping_early_aborts_the_rest(backend):
    engine = backend.llm.llm_engine
    requests = [GenerationRequest(key=f"p{i}", messages=chat(f"Problem {i}"), n=2) for i in range(8)]
    stream = backend.generate(requests, SamplingConfig(max_tokens=300))
    next(stream)
    stream.close()
    assert not engine.has_unfinished_requests()
    assert len(list(backend.generate(requests[:2], SamplingConfig(max_tokens=4)))) == 2


def test_stop_strings_cut_the_text(backend):
    requests = [GenerationRequest(key=f"p{i}", messages=chat(p), n=4) for i, p in enumerate(PROBLEMS)]
    results = list(backend.generate(requests, SamplingConfig(max_tokens=64, stop=("e", "a"))))
    texts = [c.text for r in results for c in r.completions]
    assert not any("e" in t or "a" in t for t in texts)
    assert any(c.finish_reason == "stop" for r in results for c in r.completions)


def test_duplicate_keys_are_refused(backend):
    from dypo_data.errors import ConfigError

    with pytest.raises(ConfigError, match="twice"):
        list(backend.generate([GenerationRequest("a", chat("x"), n=1)] * 2, SamplingConfig()))


def test_logprobs_match_a_transformers_forward(backend, tiny_model_dir):
    """fp32 vLLM sampling logprobs ("raw": before temperature) equal a recomputation to ~1e-4."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    requests = [GenerationRequest(key=f"p{i}", messages=chat(p), n=2) for i, p in enumerate(PROBLEMS[:3])]
    worst = 0.0
    for temperature in (1.0, 0.7):
        for result in backend.generate(requests, SamplingConfig(temperature=temperature, max_tokens=40, logprobs=True)):
            for c in result.completions:
                ids = torch.tensor([result.prompt_token_ids + c.token_ids])
                with torch.no_grad():
                    logits = model(ids).logits[0, len(result.prompt_token_ids) - 1 : -1]  # (T, V)
                ref = torch.log_softmax(logits.double(), -1).gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
                worst = max(worst, (ref - torch.tensor(c.logprobs, dtype=torch.float64)).abs().max().item())
    assert worst < 1e-4


def test_bad_model_paths(tmp_path):
    with pytest.raises(BackendError) as info:
        make_backend("vllm", ModelSpec(name="m", path=str(tmp_path / "nope")))
    assert str(tmp_path / "nope") in str(info.value)
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(BackendError, match="config.json"):
        make_backend("vllm", ModelSpec(name="m", path=str(tmp_path / "not-a-model")))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(BackendError, match="could not start"):
        make_backend("vllm", ModelSpec(name="m", path=str(broken), kv_cache_gib=1))


def test_data_parallel_is_refused_with_a_fix(tiny_model_dir):
    from dypo_data.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        make_backend("vllm", ModelSpec(name="m", path=str(tiny_model_dir), data_parallel_size=2))
    assert "openai" in info.value.hint


def test_close_is_idempotent_and_final(monkeypatch, tiny_spec):
    from dypo_data.backends import vllm_engine

    shutdowns = []

    class FakeLLM:  # stands in for vllm.LLM: close() only needs the engine core's shutdown
        class llm_engine:  # noqa: N801
            class engine_core:  # noqa: N801
                shutdown = staticmethod(lambda: shutdowns.append(1))

        def get_tokenizer(self):
            return None

    monkeypatch.setattr(vllm_engine, "start_engine", lambda model: (FakeLLM(), 0.0, None))
    with make_backend("vllm", tiny_spec) as backend:
        pass
    backend.close()
    assert shutdowns == [1]
    with pytest.raises(BackendError, match="closed"):
        list(backend.generate([GenerationRequest("a", chat("x"), n=1)], SamplingConfig()))


@pytest.mark.slow
def test_processed_logprobs_include_temperature(tiny_model_dir):
    """logprobs_mode="processed": the logprob under the temperature-scaled distribution."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = ModelSpec(name="tiny", path=str(tiny_model_dir), dtype="float32", kv_cache_gib=1, logprobs_mode="processed")
    with make_backend("vllm", spec) as backend:
        results = list(backend.generate([GenerationRequest("a", chat("hi"), n=2)], SamplingConfig(temperature=0.5, max_tokens=20, logprobs=True)))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    for c in results[0].completions:
        prompt = results[0].prompt_token_ids
        with torch.no_grad():
            logits = model(torch.tensor([prompt + c.token_ids])).logits[0, len(prompt) - 1 : -1].double() / 0.5
        ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
        assert (ref - torch.tensor(c.logprobs, dtype=torch.float64)).abs().max() < 1e-4


def test_chat_template_override_renders_through_the_engine_tokenizer(backend):
    ids = render_prompt(backend.tokenizer, chat("abc"), "{{ messages[0]['content'] }}!")
    assert backend.tokenizer.decode(ids) == "abc!"
