"""The generation interface every backend implements, and its configs.

A backend turns chat requests into completions. `generate` yields one `GenerationResult` per request
as soon as all of that request's samples are done, so a job can write shards while the rest of the
batch is still running.

Samples and seeds
- Sample `i` of request `key` uses the seed `sample_seed(sampling.seed, key, i)` (vLLM engine and
  OpenAI-compatible server), so the same sample comes out whether it was generated in one call with
  `n=8` or resumed later with `sample_offset=5, n=3`. Raising `n` only adds samples. With
  `seed=None` every call draws fresh random seeds. The transformers backend seeds each batch instead
  (its samples depend on how requests were batched).

Logprobs (`SamplingConfig.logprobs=True`)
- `Completion.logprobs[t]` is the log-probability of completion token `t` under the distribution
  named by `ModelSpec.logprobs_mode`:
  - "raw" (default): log_softmax of the model's logits, before temperature and top-p. This is what
    a trainer recomputes with one forward pass; at temperature 1 and top_p 1 it is exactly the
    distribution the token was sampled from.
  - "processed": after temperature and top-p (vLLM's `processed_logprobs`): exactly the sampling
    distribution at any setting.
  Every backend reports the same kind for the same `ModelSpec`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from dypo_data.contracts.ids import stable_hash
from dypo_data.errors import BackendError, ConfigError

LogprobsMode = Literal["raw", "processed"]
LOGPROBS_MODES = ("raw", "processed")
SEED_RANGE = 2**31  # per-sample seeds are drawn in [0, 2**31): valid for every engine and the OpenAI API


@dataclass(frozen=True)
class SamplingConfig:
    n: int = field(default=1, metadata={"help": "Samples per prompt (a request's own n overrides it)."})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature; 0 means greedy decoding."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling: keep the smallest token set with this much probability."})
    max_tokens: int = field(default=512, metadata={"help": "Most tokens generated per completion."})
    stop: tuple[str, ...] = field(default=(), metadata={"help": "Strings that end a completion (not included in its text)."})
    seed: int | None = field(
        default=0, metadata={"help": "Base seed; sample i of a prompt gets a seed derived from (seed, prompt key, i). None: random."}
    )
    logprobs: bool = field(
        default=False, metadata={"help": "Return completion token ids and each sampled token's logprob (policy rollouts)."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.stop, (list, str)):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        if self.n < 1:
            raise ConfigError(f"n={self.n} samples per prompt must be >= 1",
                              "dypo-data generate: pass -m (traces per teacher) and -k (policy group size) of 1 or more")
        if self.temperature < 0:
            raise ConfigError(f"temperature={self.temperature} must be >= 0", "use --temperature 0 for greedy decoding")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p={self.top_p} must be in (0, 1]", "use --top-p 1 to switch nucleus sampling off")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens={self.max_tokens} must be >= 1", "pass --max-tokens N with N >= 1")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ConfigError(f"stop={self.stop!r} must hold non-empty strings")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ConfigError(f"seed={self.seed!r} must be a non-negative integer or None")

    def settings(self) -> dict[str, Any]:
        """JSON-able settings that shape a sample. `n` is left out, so raising it only adds samples;
        `logprobs` is left out because it changes what is reported, not what is sampled."""
        return {
            "temperature": float(self.temperature),
            "top_p": float(self.top_p),
            "max_tokens": int(self.max_tokens),
            "stop": list(self.stop),
            "seed": self.seed,
        }


@dataclass(frozen=True)
class ModelSpec:
    name: str = field(metadata={"help": "The name traces record for this model (teacher or policy name)."})
    path: str = field(metadata={"help": "Local model directory (vLLM, transformers) or the served model name (OpenAI server)."})
    dtype: str = field(default="auto", metadata={"help": "Weights and activations dtype: auto, float32, bfloat16, float16."})
    max_model_len: int | None = field(default=None, metadata={"help": "Longest prompt + completion in tokens; None: the model's own limit."})
    enforce_eager: bool = field(
        default=True, metadata={"help": "vLLM: skip torch.compile / CUDA graphs (starts in seconds instead of minutes on CPU)."}
    )
    kv_cache_gib: float | None = field(
        default=2.0, metadata={"help": "vLLM on CPU: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE, rounded up to whole GiB)."}
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM: GPUs one model is split over."})
    data_parallel_size: int = field(
        default=1, metadata={"help": "Model replicas. vLLM's offline engine takes 1; run one server per replica instead."}
    )
    gpu_memory_utilization: float = field(default=0.85, metadata={"help": "vLLM on GPU: share of GPU memory the engine may take."})
    chat_template: str | None = field(default=None, metadata={"help": "Jinja chat template overriding the tokenizer's."})
    logprobs_mode: LogprobsMode = field(
        default="raw", metadata={"help": "Which logprobs are reported: raw (model logits) or processed (after temperature, top-p)."}
    )
    max_num_seqs: int | None = field(default=None, metadata={"help": "vLLM: most sequences decoded at once; None: vLLM's default."})
    max_num_batched_tokens: int | None = field(
        default=None, metadata={"help": "vLLM: token budget of one engine step; None: chosen by the backend."}
    )

    def __post_init__(self) -> None:
        if not self.name or not self.path:
            raise ConfigError(f"model name={self.name!r} and path={self.path!r} must be non-empty")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16", "half", "float"):
            raise ConfigError(f"dtype={self.dtype!r} must be one of auto, float32, bfloat16, float16")
        if self.logprobs_mode not in LOGPROBS_MODES:
            raise ConfigError(f"logprobs_mode={self.logprobs_mode!r} must be one of {', '.join(LOGPROBS_MODES)}")
        if self.kv_cache_gib is not None and self.kv_cache_gib <= 0:
            raise ConfigError(f"kv_cache_gib={self.kv_cache_gib} must be > 0, or None for vLLM's own sizing")
        if self.tensor_parallel_size < 1 or self.data_parallel_size < 1:
            raise ConfigError("tensor_parallel_size and data_parallel_size must be >= 1")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"gpu_memory_utilization={self.gpu_memory_utilization} must be in (0, 1]")
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}={value} must be >= 1 or None")

    def settings(self) -> dict[str, Any]:
        """JSON-able settings of the model that shape a sample: dtype, chat template, logprobs kind."""
        return {"dtype": self.dtype, "chat_template": template_hash(self), "logprobs_mode": self.logprobs_mode}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GenerationRequest:
    key: str  # unique within one generate() call; results carry it back (e.g. the prompt id)
    messages: list[dict]  # chat messages: [{"role": "user", "content": "..."}]
    n: int  # samples to generate for this request
    sample_offset: int = 0  # index of the first sample (resume: samples 0..offset-1 already exist)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"request {self.key!r}: n={self.n} must be >= 1")
        if self.sample_offset < 0:
            raise ConfigError(f"request {self.key!r}: sample_offset={self.sample_offset} must be >= 0")
        if not self.messages:
            raise ConfigError(f"request {self.key!r} has no messages")


@dataclass
class Completion:
    text: str
    finish_reason: str | None  # "stop" (end of sequence or a stop string), "length", ...
    num_tokens: int  # completion tokens, including a final end-of-sequence token
    token_ids: list[int] | None = None  # with SamplingConfig.logprobs
    logprobs: list[float] | None = None  # one per token id, see the module docstring
    sample_idx: int = 0  # index of this sample within its prompt (offset + position)


@dataclass
class GenerationResult:
    key: str
    completions: list[Completion]
    prompt_token_ids: list[int] | None
    seconds: float  # latency: from submitting the request until its last sample finished


@runtime_checkable
class Backend(Protocol):
    kind: str  # "vllm" | "openai" | "transformers"

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> Iterator[GenerationResult]:
        """Yield one result per request, in the order they finish."""
        ...

    def close(self) -> None: ...


class BackendBase:
    """Context-manager plumbing shared by the backends."""

    kind = "base"

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sample_seed(seed: int | None, key: str, sample_idx: int) -> int:
    """The seed of sample `sample_idx` of request `key`; a fresh random seed when `seed` is None."""
    if seed is None:
        return secrets.randbelow(SEED_RANGE)
    return int(stable_hash("sample-seed", seed, key, sample_idx), 16) % SEED_RANGE


def check_model_dir(path: str) -> Path:
    """A local model directory, or BackendError naming the path and the fix."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise BackendError(
            f"model path {path} does not exist",
            "pass a model directory, or 'smollm2' / 'tiny' for the bundled models",
        )
    if not (root / "config.json").is_file():
        raise BackendError(
            f"model path {path} has no config.json, so it is not a Hugging Face model directory",
            "point at the directory holding config.json and the weights",
        )
    return root


def check_requests(requests: Sequence[GenerationRequest]) -> None:
    seen: set[str] = set()
    for request in requests:
        if request.key in seen:
            raise ConfigError(f"request key {request.key!r} appears twice in one generate() call")
        seen.add(request.key)


def read_chat_template(model_dir: str | Path) -> str | None:
    """The chat template saved with a model directory, or None."""
    root = Path(model_dir)
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = root / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text()).get("chat_template")
        if isinstance(template, str):
            return template
    return None


def template_hash(model: ModelSpec) -> str | None:
    """Short hash of the chat template in effect: the override, else the one saved with the model."""
    template = model.chat_template if model.chat_template is not None else read_chat_template(model.path)
    if template is None:
        return None
    return hashlib.sha256(template.encode("utf-8")).hexdigest()[:16]


def render_prompt(tokenizer: Any, messages: list[dict], chat_template: str | None) -> list[int]:
    """Prompt token ids: the chat template with the generation prompt, tokenised without extra
    special tokens (the template writes them), as vLLM's chat endpoint does."""
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, chat_template=chat_template
    )
    return list(tokenizer.encode(text, add_special_tokens=False))
