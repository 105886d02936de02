"""transformers `generate` backend: no vLLM needed, slower, handy as a reference and fallback.

Requests are grouped into batches of whole requests (about `batch_size` rows, one row per sample),
sorted by prompt length and left-padded. Each batch is sampled under its own seed derived from
`SamplingConfig.seed` and the batch's requests, inside `torch.random.fork_rng`, so the caller's
random state is untouched; unlike the vLLM backends, a sample depends on how requests were batched.

The model's own generation defaults (top_k, repetition penalty, ...) are ignored: only the
`SamplingConfig` settings apply (top_k off), as in the vLLM backends.

Logprobs follow `ModelSpec.logprobs_mode` (see `dypo_data.backends.base`): "raw" from the
unprocessed logits (`output_logits`), "processed" from the scores after temperature and top-p.
Stop strings end the text before the stop string, as vLLM does; the token ids keep the tokens that
were generated up to and including the one that completed the stop string.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from dypo_data.backends.base import (
    BackendBase,
    Completion,
    GenerationRequest,
    GenerationResult,
    ModelSpec,
    SamplingConfig,
    check_model_dir,
    check_requests,
    render_prompt,
    sample_seed,
)
from dypo_data.errors import BackendError

log = logging.getLogger(__name__)

DTYPES = {"float32": "float32", "float": "float32", "bfloat16": "bfloat16", "float16": "float16", "half": "float16"}


@dataclass
class _Row:
    request: GenerationRequest
    sample_idx: int
    prompt_ids: list[int]


class TransformersBackend(BackendBase):
    """Batched `model.generate`; see the module docstring."""

    kind = "transformers"

    def __init__(self, model: ModelSpec, *, batch_size: int = 16, device: str | None = None) -> None:
        check_model_dir(model.path)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        self.model_spec = model
        self.batch_size = max(1, batch_size)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model.path)
            dtype = DTYPES.get(model.dtype, "auto")
            self.model = AutoModelForCausalLM.from_pretrained(model.path, dtype=dtype).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise BackendError(
                f"transformers could not load model {model.name} at {model.path}: {exc}",
                "check that the directory holds a complete model and tokenizer",
            ) from exc
        base = self.model.generation_config
        self.eos_ids = _as_list(base.eos_token_id) or _as_list(self.tokenizer.eos_token_id)
        pad = base.pad_token_id if base.pad_token_id is not None else self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]
        # Start from a clean config so the model's sampling defaults do not apply.
        self.model.generation_config = GenerationConfig(eos_token_id=self.eos_ids, pad_token_id=self.pad_id)

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> Iterator[GenerationResult]:
        if self.model is None:
            raise BackendError("the transformers backend is closed", "create a new backend")
        check_requests(requests)
        started = time.perf_counter()
        prompts = {r.key: render_prompt(self.tokenizer, r.messages, self.model_spec.chat_template) for r in requests}
        for batch in self._batches(requests, prompts):
            rows = [_Row(r, i, prompts[r.key]) for r in batch for i in range(r.sample_offset, r.sample_offset + r.n)]
            completions = self._generate_rows(rows, sampling, batch)
            for request in batch:
                mine = [c for row, c in zip(rows, completions) if row.request is request]
                yield GenerationResult(request.key, mine, list(prompts[request.key]), time.perf_counter() - started)

    def _batches(self, requests: Sequence[GenerationRequest], prompts: dict[str, list[int]]) -> Iterator[list[GenerationRequest]]:
        """Whole requests, shortest prompts first, about `batch_size` rows per batch."""
        batch: list[GenerationRequest] = []
        rows = 0
        for request in sorted(requests, key=lambda r: len(prompts[r.key])):
            if batch and rows + request.n > self.batch_size:
                yield batch
                batch, rows = [], 0
            batch.append(request)
            rows += request.n
        if batch:
            yield batch

    def _generate_rows(self, rows: list[_Row], sampling: SamplingConfig, batch: list[GenerationRequest]) -> list[Completion]:
        import torch

        width = max(len(r.prompt_ids) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # (R, P) left-padded
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            attention_mask[i, width - len(row.prompt_ids) :] = 1
        seed = sample_seed(sampling.seed, "batch:" + ",".join(f"{r.key}/{r.sample_offset}" for r in batch), 0)
        with torch.random.fork_rng(devices=[self.device] if self.device != "cpu" else []), torch.no_grad():
            torch.manual_seed(seed)
            out = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                **self._generate_kwargs(sampling),
            )
        new_tokens = out.sequences[:, width:].cpu()  # (R, T)
        steps = out.logits if self.model_spec.logprobs_mode == "raw" else out.scores
        logprobs = None
        if sampling.logprobs:
            stacked = torch.stack([s.float() for s in steps], dim=1).cpu()  # (R, T, V)
            logprobs = torch.log_softmax(stacked, dim=-1).gather(-1, new_tokens[:, :, None]).squeeze(-1)  # (R, T)
        return [self._completion(row, new_tokens[i], None if logprobs is None else logprobs[i], sampling) for i, row in enumerate(rows)]

    def _generate_kwargs(self, sampling: SamplingConfig) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_tokens,
            "do_sample": sampling.temperature > 0,
            "top_k": 0,
            "return_dict_in_generate": True,
            "output_scores": sampling.logprobs and self.model_spec.logprobs_mode == "processed",
            "output_logits": sampling.logprobs and self.model_spec.logprobs_mode == "raw",
            "eos_token_id": self.eos_ids,
            "pad_token_id": self.pad_id,
        }
        if sampling.temperature > 0:
            kwargs["temperature"] = sampling.temperature
            kwargs["top_p"] = sampling.top_p
        if sampling.stop:
            kwargs["stop_strings"] = list(sampling.stop)
            kwargs["tokenizer"] = self.tokenizer
        return kwargs

    def _completion(self, row: _Row, tokens, logprobs, sampling: SamplingConfig) -> Completion:
        ids = tokens.tolist()
        length, finish = len(ids), "length"
        for t, token in enumerate(ids):
            if token in self.eos_ids:
                length, finish = t + 1, "stop"
                break
        ids = ids[:length]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((text.find(s) for s in sampling.stop if s in text), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
            length = _tokens_through_stop(self.tokenizer, ids, sampling.stop)
            ids = ids[:length]
        completion = Completion(text=text, finish_reason=finish, num_tokens=length, sample_idx=row.sample_idx)
        if sampling.logprobs:
            completion.token_ids = ids
            completion.logprobs = [float(x) for x in logprobs[:length]]
        return completion

    def close(self) -> None:
        self.model = None
        import gc

        gc.collect()


def _tokens_through_stop(tokenizer, ids: list[int], stops: tuple[str, ...]) -> int:
    """The fewest leading tokens whose decoded text contains a stop string (binary search)."""
    low, high = 1, len(ids)
    while low < high:
        mid = (low + high) // 2
        text = tokenizer.decode(ids[:mid], skip_special_tokens=True)
        if any(s in text for s in stops):
            high = mid
        else:
            low = mid + 1
    return high


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [int(value)]
