"""The transformers `generate` backend on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from dypo_data.backends import GenerationRequest, ModelSpec, SamplingConfig, make_backend


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


REQUESTS = [GenerationRequest(key=f"p{i}", messages=chat("x" * (3 + 5 * i)), n=1 + i % 3) for i in range(5)]


@pytest.fixture(scope="module")
def raw_backend(tiny_model_dir):
    with make_backend("transformers", ModelSpec(name="tiny", path=str(tiny_model_dir)), batch_size=4) as b:
        yield b


def recompute(model, prompt_ids, token_ids, temperature=1.0):
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].double() / temperature  # (T, V)
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(token_ids)[:, None])[:, 0]


def test_counts_and_lengths(raw_backend):
    results = {r.key: r for r in raw_backend.generate(REQUESTS, SamplingConfig(max_tokens=20, logprobs=True))}
    assert results.keys() == {r.key for r in REQUESTS}
    for request in REQUESTS:
        result = results[request.key]
        assert [c.sample_idx for c in result.completions] == list(range(request.n))
        for c in result.completions:
            assert 1 <= c.num_tokens <= 20
            assert len(c.token_ids) == len(c.logprobs) == c.num_tokens
            assert all(math.isfinite(x) and x <= 0 for x in c.logprobs)
            assert c.finish_reason == ("stop" if c.token_ids[-1] in raw_backend.eos_ids else "length")


def test_raw_logprobs_match_a_forward_pass(raw_backend):
    sampling = SamplingConfig(temperature=0.7, max_tokens=24, logprobs=True)
    for result in raw_backend.generate(REQUESTS[:3], sampling):
        for c in result.completions:
            ref = recompute(raw_backend.model, result.prompt_token_ids, c.token_ids)  # raw: no temperature
            assert (ref - torch.tensor(c.logprobs, dtype=torch.float64)).abs().max() < 1e-4


def test_processed_logprobs_include_the_temperature(tiny_model_dir):
    spec = ModelSpec(name="tiny", path=str(tiny_model_dir), logprobs_mode="processed")
    with make_backend("transformers", spec) as backend:
        (result,) = backend.generate(REQUESTS[:1], SamplingConfig(temperature=0.5, max_tokens=16, logprobs=True))
        c = result.completions[0]
        ref = recompute(backend.model, result.prompt_token_ids, c.token_ids, temperature=0.5)
    assert (ref - torch.tensor(c.logprobs, dtype=torch.float64)).abs().max() < 1e-4


def test_seeded_batches_repeat_and_leave_the_global_rng_alone(raw_backend):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = [c.text for r in raw_backend.generate(REQUESTS, SamplingConfig(max_tokens=12)) for c in r.completions]
    assert torch.rand(1) == expected_next
    b = [c.text for r in raw_backend.generate(REQUESTS, SamplingConfig(max_tokens=12)) for c in r.completions]
    assert a == b


def test_greedy_and_stop_strings(raw_backend):
    greedy = SamplingConfig(temperature=0, max_tokens=30)
    free = {r.key: r.completions[0].text for r in raw_backend.generate(REQUESTS, greedy)}
    stop = free["p0"][5]  # a character greedy decoding writes at position 5
    cut = {r.key: r for r in raw_backend.generate(REQUESTS, SamplingConfig(temperature=0, max_tokens=30, stop=(stop,), logprobs=True))}
    assert cut["p0"].completions[0].text == free["p0"][: free["p0"].index(stop)]
    assert cut["p0"].completions[0].finish_reason == "stop"
    for key, result in cut.items():
        texts = {c.text for c in result.completions}
        assert len(texts) == 1  # greedy: every sample of a prompt is the same
        assert stop not in texts.pop()
        assert all(len(c.token_ids) == c.num_tokens for c in result.completions)
