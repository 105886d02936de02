"""Typed configuration of a training run: one frozen dataclass per concern.

A run's config is built in three layers, each overriding the one before:

1. the defaults below (the paper's: k = 8, alpha = 0.5, beta_gal = 1, gamma = 1, lr 1e-6, bf16);
2. a recipe (`dypo_train/recipes/<name>.yaml`) or a YAML file of the user's (which may itself start
   from a recipe with a top-level `recipe: <name>` key);
3. command-line overrides `section.field=value`.

Every field's `help` is its only documentation; `dypo-train config --help-fields` prints them all.
An unknown key is an error naming the key and the closest valid one; `__post_init__` checks ranges
and cross-field rules and says how to fix them.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from dypo_data.errors import ConfigError
from dypo_data.prompts.formats import DEFAULT_INSTRUCTION


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


def _check(cond: bool, name: str, value: Any, rule: str, fix: str) -> None:
    if not cond:
        raise ConfigError(f"{name}={value!r} {rule}", fix)


@dataclass(frozen=True)
class ModelConfig:
    policy: str = _f("smollm2", "Policy to train: a model directory, 'smollm2' (the embedded SmolLM2-135M-Instruct) or 'tiny[:SEED]'.")
    name: str = _f("", "Name of the policy in the store's traces (default: the policy spec).")
    dtype: Literal["float32", "bfloat16"] = _f("float32", "Dtype of the trained weights; use mixed_precision for bf16 compute.")
    mixed_precision: Literal["no", "bf16", "fp16"] = _f("bf16", "Accelerate mixed precision (bf16 autocast where the device supports it).")
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward to save memory.")
    reference: Literal["policy", "none"] = _f("policy", "Frozen reference for GAL and KL: a copy of the starting policy, or none.")

    def __post_init__(self) -> None:
        _check(bool(self.policy), "model.policy", self.policy, "must name a model", "pass a model directory, 'smollm2' or 'tiny'")


@dataclass(frozen=True)
class DataConfig:
    store: str = _f("", "Store directory made by dypo-data (prompts, traces, verdicts); train metrics are written into it.")
    mode: Literal["offline", "online"] = _f("offline", "offline: train on the rollout groups in the store; online: sample rollouts from the policy as it trains.")
    rollout_model: str = _f("", "Offline: use only rollout groups of this model name (default: every policy model in the store).")
    teachers: list[str] = _f([], "Teacher model names whose verified traces are SFT targets (default: every teacher in the store).")
    max_teachers: int = _f(0, "Keep only the first N teachers by name (0: all); 1 gives the one-teacher ablation.")
    prompt_split: str = _f(
        "train",
        "Online: sample rollouts only for prompts of this split ('' for every prompt). `dypo-data eval` stores benchmark "
        "problems as split 'test', so they never become training prompts.",
    )
    old_logprobs: Literal["recompute", "behaviour"] = _f(
        "recompute",
        "pi_old of the importance ratio: 'recompute' with the current weights before the update (verl/TRL practice; ratio 1 "
        "on-policy), or 'behaviour': the sampling logprobs stored with each rollout.",
    )
    max_prompt_tokens: int = _f(1024, "Prompts longer than this (tokens, chat template included) are skipped and counted.")
    max_completion_tokens: int = _f(8192, "Teacher traces and rollouts are truncated to this many completion tokens.")
    seed: int = _f(0, "Seed of the data order and of the teacher-trace choice.")

    def __post_init__(self) -> None:
        _check(self.max_teachers >= 0, "data.max_teachers", self.max_teachers, "must be >= 0", "use 0 for every teacher")
        _check(self.max_prompt_tokens >= 1, "data.max_prompt_tokens", self.max_prompt_tokens, "must be >= 1", "use e.g. 1024")
        _check(self.max_completion_tokens >= 1, "data.max_completion_tokens", self.max_completion_tokens, "must be >= 1", "use e.g. 8192")


@dataclass(frozen=True)
class LossConfig:
    gate: Literal["dypo", "none", "sft", "rl", "static"] = _f(
        "dypo",
        "Routing of prompts to loss terms: dypo (easy skipped, hard -> SFT, mid -> RL + GAL), none (every term on every "
        "prompt), sft (SFT only), rl (RL + GAL only), static (fixed sft_coef * SFT + (1 - sft_coef) * RL, no gate).",
    )
    alpha: float = _f(0.5, "Weight of the RL term on mid prompts; 1 - alpha weighs GAL (gal_mode=mix).")
    gamma: float = _f(1.0, "Weight of the SFT term on hard prompts.")
    beta_gal: float = _f(1.0, "Temperature beta of GAL: -log sigmoid(beta * d).")
    sft_coef: float = _f(0.5, "static gate: weight of SFT; RL gets 1 - sft_coef.")
    rl_loss: Literal["grpo", "gspo"] = _f("grpo", "grpo: token-level ratio (paper); gspo: sequence-level ratio (public DYPO code).")
    clip_eps: float = _f(0.2, "Lower clip range of the ratio (1 - eps).")
    clip_eps_high: float = _f(0.0, "Upper clip range (1 + eps_high); 0 uses clip_eps.")
    beta_kl: float = _f(0.0, "Coefficient of KL(pi_theta || pi_ref) (k3 estimator) on RL tokens; 0 turns it off.")
    norm: Literal["token_mean", "seq_mean", "sum"] = _f(
        "token_mean",
        "Normalisation of SFT and RL terms: token_mean divides by the number of counted tokens of the whole step (all "
        "micro-batches and ranks, as DAPO/TRL's default); seq_mean averages per-sequence token means; sum divides by "
        "max_completion_tokens (Dr. GRPO).",
    )
    term_weighting: Literal["prompt_share", "per_term"] = _f(
        "prompt_share",
        "prompt_share: each term is scaled by the share of trained prompts it covers, so the step's loss is the mean of "
        "the per-prompt objectives; per_term: each term is a mean over its own prompts.",
    )
    gal_mode: Literal["mix", "additive"] = _f("mix", "mix: (1 - alpha) * GAL (paper); additive: alpha * RL + gal_coef * GAL (public code).")
    gal_coef: float = _f(0.001, "gal_mode=additive: coefficient of GAL.")
    gal_reference: bool = _f(True, "GAL on log-ratios against the frozen reference (paper); false: raw sequence logprobs (public code).")
    offpolicy_teacher: bool = _f(False, "LUFFY: replace one rollout of each group by a verified teacher trace (reward 1), shaped by f(p) = p / (p + offpolicy_shaping).")
    offpolicy_shaping: float = _f(0.1, "LUFFY's shaping constant in f(p) = p / (p + c).")
    success: float = _f(1.0, "Reward at or above which an all-equal group counts as easy.")
    rollout_correction: Literal["none", "tis", "seq_tis"] = _f(
        "none",
        "Off-policy correction of rollouts whose sampler differs from pi_old (stale overlap, servers, bf16 engine): "
        "none; tis: per-token weight min(pi_old / pi_sampler, rollout_is_cap) on the RL term (verl TIS, TRL "
        "token_truncate); seq_tis: one weight per rollout, min(prod_t pi_old / pi_sampler, cap) (TRL sequence_truncate). "
        "Needs the sampling logprobs stored with the rollouts and data.old_logprobs=recompute.",
    )
    rollout_is_cap: float = _f(2.0, "Cap of the importance weight of loss.rollout_correction (verl: 2, TRL: 3); >= 1.")

    def __post_init__(self) -> None:
        for name in ("alpha", "sft_coef"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"loss.{name}", value, "must be in [0, 1]", f"set loss.{name} between 0 and 1 (paper: 0.5)")
        for name in ("gamma", "beta_gal", "clip_eps", "beta_kl", "gal_coef", "offpolicy_shaping", "clip_eps_high"):
            value = getattr(self, name)
            _check(value >= 0.0, f"loss.{name}", value, "must be >= 0", f"set loss.{name} to a non-negative value")
        _check(self.clip_eps < 1.0, "loss.clip_eps", self.clip_eps, "must be < 1", "use 0.2")
        _check(self.offpolicy_shaping > 0.0, "loss.offpolicy_shaping", self.offpolicy_shaping, "must be > 0", "use 0.1 (LUFFY)")
        _check(self.rollout_is_cap >= 1.0, "loss.rollout_is_cap", self.rollout_is_cap, "must be >= 1", "use 2 (verl) or 3 (TRL)")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = _f(1e-6, "Learning rate of AdamW.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    betas: list[float] = _f([0.9, 0.999], "AdamW betas.")
    warmup_steps: int = _f(0, "Linear warm-up steps; then the rate stays constant.")
    max_grad_norm: float = _f(1.0, "Clip the global gradient norm to this (0: no clipping; the norm is still logged).")
    sft_lr: float = _f(0.0, "Public-code variant: a separate SFT optimizer at this rate for buffered hard prompts (0: SFT shares the main optimizer).")
    sft_buffer: int = _f(0, "Public-code variant: buffer hard prompts and run one SFT update once this many accumulate (needs sft_lr > 0).")

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", self.lr, "must be > 0", "use e.g. 1e-6")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas", self.betas, "must be two values in [0, 1)", "use [0.9, 0.999]")
        _check(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, "must be >= 0", "use 0")
        _check(self.max_grad_norm >= 0, "optim.max_grad_norm", self.max_grad_norm, "must be >= 0", "use 1.0")
        _check(self.sft_lr >= 0, "optim.sft_lr", self.sft_lr, "must be >= 0", "use 0 to share the main optimizer")
        _check(self.sft_buffer >= 0, "optim.sft_buffer", self.sft_buffer, "must be >= 0", "use 0 to train hard prompts inline")
        _check((self.sft_buffer > 0) == (self.sft_lr > 0), "optim.sft_buffer", self.sft_buffer,
               f"and optim.sft_lr={self.sft_lr} must be set together", "set both (e.g. sft_buffer=16, sft_lr=1e-5) or neither")


@dataclass(frozen=True)
class RolloutConfig:
    k: int = _f(8, "Online: rollouts sampled per prompt (the group size G). Offline runs use the store's k (one k per run).")
    temperature: float = _f(1.0, "Sampling temperature of online rollouts.")
    top_p: float = _f(1.0, "Nucleus sampling of online rollouts.")
    max_tokens: int = _f(8192, "Longest online rollout in tokens.")
    dtype: Literal["float32", "bfloat16", "auto"] = _f("float32", "vLLM dtype; float32 makes sampling logprobs match the trainer's (DESIGN.md).")
    kv_cache_gib: float = _f(2.0, "CPU KV cache of the engine (GiB).")
    gpu_memory_utilization: float = _f(0.3, "GPU: share of memory vLLM may take beside the trainer.")
    backend: Literal["engine", "server"] = _f(
        "engine",
        "Online: engine samples with an in-process vLLM engine on each training process; server samples from the vLLM "
        "servers at rollout.base_urls (start them with dypo-train serve-rollouts) and pushes the weights to them after "
        "each update.",
    )
    base_urls: list[str] = _f([], "rollout.backend=server: the servers' base URLs, e.g. [http://127.0.0.1:8001/v1, ...].")
    weight_dir: str = _f("", "rollout.backend=server: a directory the trainer and every server can read, where each policy "
                             "version is written for the servers to reload (default: RUN_DIR/weights).")
    server_timeout_s: float = _f(600.0, "rollout.backend=server: seconds one request or weight push may take.")
    weight_transfer: Literal["shared_path", "nccl", "ipc"] = _f(
        "shared_path",
        "rollout.backend=server: how each update reaches the servers. shared_path: written once under "
        "rollout.weight_dir, reloaded by every server (any machine, CPU included). nccl: broadcast from the trainer's GPU "
        "to every server's GPUs by vLLM's NCCL weight-transfer engine. ipc: CUDA IPC handles to servers on the trainer's "
        "GPU (same node). nccl and ipc need CUDA and servers started with the same choice "
        "(dypo-train serve-rollouts --weight-transfer).",
    )
    nccl_address: str = _f("", "rollout.weight_transfer=nccl: the trainer's address the servers' workers connect to for the "
                                "NCCL rendezvous (default: 127.0.0.1 when every server is on this machine, else this host's "
                                "address).")
    nccl_port: int = _f(0, "rollout.weight_transfer=nccl: the port of that rendezvous (0: a free one).")
    weight_bucket_bytes: int = _f(
        1 << 30,
        "Weight sync: at most this many bytes of full weights are gathered and sent at once (a larger tensor goes "
        "alone): a sharded (FSDP2) trainer gathers this much into its colocated engine at a time; for nccl/ipc it is "
        "vLLM's packed buffer size.",
    )
    tensor_parallel_size: int = _f(1, "rollout.backend=engine: GPUs each process's in-process engine splits the model "
                                      "over (processes x this must fit the visible GPUs; 1 on CPU).")
    overlap: bool = _f(False, "Shorthand for max_staleness=1 (at least): one-step-stale overlap of sampling and training.")
    max_staleness: int = _f(
        0,
        "Online: rollouts may be sampled up to this many policy versions behind the weights they train (0: every step "
        "samples with its own weights; N >= 1: the next N steps are sampled in the background while this one trains).",
    )

    def __post_init__(self) -> None:
        _check(self.k >= 1, "rollout.k", self.k, "must be >= 1", "use 8 (paper)")
        _check(self.temperature >= 0, "rollout.temperature", self.temperature, "must be >= 0", "use 1.0")
        _check(0 < self.top_p <= 1, "rollout.top_p", self.top_p, "must be in (0, 1]", "use 1.0")
        _check(self.max_tokens >= 1, "rollout.max_tokens", self.max_tokens, "must be >= 1", "use e.g. 1024")
        _check(self.kv_cache_gib > 0, "rollout.kv_cache_gib", self.kv_cache_gib, "must be > 0", "use 2")
        _check(self.backend == "server" or not self.base_urls, "rollout.base_urls", self.base_urls,
               "is set but rollout.backend='engine' samples in-process", "set rollout.backend=server, or drop rollout.base_urls")
        _check(self.backend == "engine" or bool(self.base_urls), "rollout.base_urls", self.base_urls,
               "is empty but rollout.backend='server'", "give the servers, e.g. rollout.base_urls=[http://127.0.0.1:8001/v1]")
        _check(self.server_timeout_s > 0, "rollout.server_timeout_s", self.server_timeout_s, "must be > 0", "use 600")
        _check(self.max_staleness >= 0, "rollout.max_staleness", self.max_staleness, "must be >= 0",
               "use 0 (synchronous) or 1 (one-step-stale overlap)")
        _check(self.backend == "server" or self.weight_transfer == "shared_path", "rollout.weight_transfer",
               self.weight_transfer, "applies to rollout.backend=server (an in-process engine takes the tensors directly)",
               "set rollout.backend=server, or drop rollout.weight_transfer")
        _check(0 <= self.nccl_port <= 65535, "rollout.nccl_port", self.nccl_port, "must be in [0, 65535]",
               "use 0 for a free port")
        _check(self.weight_bucket_bytes >= 1, "rollout.weight_bucket_bytes", self.weight_bucket_bytes, "must be >= 1",
               "use 1073741824 (1 GiB)")
        _check(self.tensor_parallel_size >= 1, "rollout.tensor_parallel_size", self.tensor_parallel_size, "must be >= 1",
               "use 1, or the GPUs one engine may take")
        _check(self.backend == "engine" or self.tensor_parallel_size == 1, "rollout.tensor_parallel_size",
               self.tensor_parallel_size, "applies to rollout.backend=engine (servers are started with their own)",
               "drop it, and start the servers with dypo-train serve-rollouts --tensor-parallel-size")

    @property
    def staleness(self) -> int:
        """Policy versions a step's rollouts may lag behind: max_staleness, at least 1 with overlap."""
        return max(self.max_staleness, int(self.overlap))


@dataclass(frozen=True)
class EvalConfig:
    every: int = _f(0, "Evaluate the current weights every N steps and after the last step, on eval.prompts (0: never).")
    prompts: list[str] = _f([], "Held-out prompt sets, [NAME=]FILE (JSONL/Parquet with problem and answer); NAME defaults to the file's stem.")
    k: int = _f(4, "Samples per problem (avg@k, pass@j for j <= k, maj@k).")
    limit: int = _f(0, "Use the first N problems of each set (0: all).")
    temperature: float = _f(0.6, "Sampling temperature (the paper evaluates at 0.6).")
    top_p: float = _f(0.95, "Nucleus sampling probability mass.")
    max_tokens: int = _f(1024, "Longest sample in tokens.")
    instruction: str = _f(DEFAULT_INSTRUCTION, "Appended to each problem unless it already contains it; '' for none.")
    seed: int = _f(0, "Sampling seed (the same at every evaluation, so steps differ only by their weights).")
    greedy: bool = _f(False, "Also evaluate greedily (temperature 0, one sample per problem) each time; metrics eval/NAME/greedy/<metric>.")

    def __post_init__(self) -> None:
        _check(self.every >= 0, "eval.every", self.every, "must be >= 0", "use 0 (off) or a step interval")
        _check(not (self.every and not self.prompts), "eval.prompts", self.prompts, f"is empty but eval.every={self.every}",
               "name a held-out set, e.g. --set eval.prompts=../shared/benchmarks/math500.jsonl")
        _check(not (self.prompts and not self.every), "eval.every", self.every, "is 0 but eval.prompts is set",
               "set eval.every=N (evaluate every N steps and at the end), or drop eval.prompts")
        _check(self.k >= 1, "eval.k", self.k, "must be >= 1", "use 4")
        _check(self.limit >= 0, "eval.limit", self.limit, "must be >= 0", "use 0 for every problem")
        _check(self.temperature >= 0, "eval.temperature", self.temperature, "must be >= 0", "use 0.6")
        _check(0 < self.top_p <= 1, "eval.top_p", self.top_p, "must be in (0, 1]", "use 0.95")
        _check(self.max_tokens >= 1, "eval.max_tokens", self.max_tokens, "must be >= 1", "use e.g. 1024")


@dataclass(frozen=True)
class RunConfig:
    name: str = _f("", "Run name (default: recipe and a timestamp); the run's outputs go to output_dir/name.")
    output_dir: str = _f("runs", "Directory of run outputs: checkpoints, resolved config, TensorBoard logs.")
    prompts_per_step: int = _f(16, "Prompts per optimizer step, over all processes (the global batch).")
    micro_batch_size: int = _f(8, "Sequences per forward/backward pass on one process; whole groups stay together.")
    max_steps: int = _f(0, "Optimizer steps to run (0: epochs decide).")
    epochs: int = _f(1, "Offline: passes over the prompt groups when max_steps is 0.")
    sft_steps: int = _f(0, "SFT-then-RL: the first N steps route every prompt with a teacher trace to SFT, then the configured gate.")
    checkpoint_every: int = _f(0, "Write a checkpoint every N steps (0: only at the end).")
    keep_checkpoints: int = _f(2, "Checkpoints kept on disk (older ones are deleted after a newer one is complete).")
    log_every: int = _f(1, "Print and log metrics every N steps.")
    report_to: list[str] = _f(["tensorboard"], "Accelerate trackers: tensorboard, wandb, trackio (any installed); [] for none.")
    seed: int = _f(0, "Seed of model-side randomness (online sampling, dropout).")

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "micro_batch_size", "log_every"):
            _check(getattr(self, name) >= 1, f"run.{name}", getattr(self, name), "must be >= 1", f"set run.{name} to a positive integer")
        for name in ("max_steps", "epochs", "sft_steps", "checkpoint_every"):
            _check(getattr(self, name) >= 0, f"run.{name}", getattr(self, name), "must be >= 0", f"set run.{name} to 0 or more")
        _check(self.keep_checkpoints >= 1, "run.keep_checkpoints", self.keep_checkpoints, "must be >= 1", "use 2")
        _check(self.max_steps > 0 or self.epochs > 0, "run.max_steps", self.max_steps, "and run.epochs are both 0", "set one of them")


@dataclass(frozen=True)
class TrainConfig:
    recipe: str = _f("dypo", "The recipe this config started from (informational once resolved).")
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The policy and its reference."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Where training data comes from."})
    loss: LossConfig = field(default_factory=LossConfig, metadata={"help": "The objective."})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "The optimizer."})
    rollout: RolloutConfig = field(default_factory=RolloutConfig, metadata={"help": "Rollout groups (online sampling)."})
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "Steps, batches, checkpoints and logging."})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "Evaluation of the weights during training."})

    def __post_init__(self) -> None:
        rl_used = self.loss.gate in ("dypo", "none", "rl", "static") or self.run.sft_steps > 0 and self.loss.gate != "sft"
        if rl_used and self.data.mode == "online":
            _check(self.rollout.k >= 2, "rollout.k", self.rollout.k, f"must be >= 2 for gate {self.loss.gate!r}: group advantages need two samples",
                   "use rollout.k=8 (paper)")
        if self.loss.offpolicy_teacher:
            _check(self.rollout.k >= 2, "rollout.k", self.rollout.k, "must be >= 2 with loss.offpolicy_teacher (one slot holds the teacher trace)", "use 8")
        gal_used = self.loss.gate in ("dypo", "none", "rl") and (self.loss.alpha < 1.0 or self.loss.gal_mode == "additive")
        if self.model.reference == "none":
            if gal_used and self.loss.gal_reference:
                raise ConfigError("model.reference='none' but GAL is on and loss.gal_reference=true needs the reference",
                                  "set model.reference=policy, or loss.gal_reference=false (raw sequence logprobs)")
            _check(self.loss.beta_kl == 0.0, "loss.beta_kl", self.loss.beta_kl, "needs a reference model but model.reference='none'",
                   "set model.reference=policy or loss.beta_kl=0")
        if self.loss.rollout_correction != "none" and self.data.old_logprobs != "recompute":
            raise ConfigError(f"loss.rollout_correction={self.loss.rollout_correction!r} weighs pi_old / pi_sampler, but "
                              "data.old_logprobs='behaviour' makes pi_old the sampler (every weight 1)",
                              "set data.old_logprobs=recompute, or loss.rollout_correction=none")
        if self.run.sft_steps and self.loss.gate == "sft":
            raise ConfigError("run.sft_steps is set but loss.gate='sft' already trains SFT only", "set loss.gate=rl for SFT-then-RL")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "loss": LossConfig, "optim": OptimConfig, "rollout": RolloutConfig, "run": RunConfig,
                             "eval": EvalConfig}


def valid_keys() -> list[str]:
    """Every settable key, dotted: `recipe`, `loss.alpha`, ..."""
    return ["recipe"] + [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in fields(cls)]


def field_help() -> dict[str, str]:
    """Key -> help text, from the dataclass metadata (the only place fields are documented)."""
    out = {"recipe": "The recipe this config started from."}
    for s, cls in SECTIONS.items():
        for f in fields(cls):
            out[f"{s}.{f.name}"] = f.metadata.get("help", "")
    return out


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid_keys(), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else "run `dypo-train config --help-fields` for the valid keys"
    return ConfigError(f"unknown config key {key!r}", hint)


def flatten(tree: dict[str, Any], *, origin: str) -> dict[str, Any]:
    """A nested mapping (YAML) -> dotted keys; unknown keys raise with the closest valid key."""
    out: dict[str, Any] = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections, got {type(tree).__name__}", "see dypo_train/recipes/dypo.yaml")
    for key, value in tree.items():
        if key == "recipe":
            out[key] = value
            continue
        if key not in SECTIONS:
            raise _unknown_key(str(key))
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: section {key!r} must be a mapping, got {value!r}", f"write it as `{key}:` with indented `field: value` lines")
        for sub, v in value.items():
            dotted = f"{key}.{sub}"
            if dotted not in valid_keys():
                raise _unknown_key(dotted)
            out[dotted] = v
    return out


def _field_type(key: str) -> Any:
    if key == "recipe":
        return str
    section, name = key.split(".", 1)
    hints = typing.get_type_hints(SECTIONS[section])
    return hints[name]


_YAML_BOOLS = {"no": False, "off": False, "false": False, "yes": True, "on": True, "true": True}


def coerce(key: str, value: Any) -> Any:
    """A value (YAML-typed, or a command-line string) -> the field's type; a mismatch is a ConfigError."""
    typ = _field_type(key)
    origin = typing.get_origin(typ)
    try:
        if origin is Literal:
            choices = typing.get_args(typ)
            if isinstance(value, bool):  # YAML 1.1 reads no/yes/off/on as booleans: `mixed_precision: no`
                spelled = [c for c in choices if isinstance(c, str) and _YAML_BOOLS.get(c.lower()) is value]
                value = spelled[0] if len(spelled) == 1 else value
            if value not in choices:
                raise ConfigError(f"{key}={value!r} must be one of {', '.join(map(str, choices))}", f"set {key} to one of them")
            return value
        if origin is list:
            (item,) = typing.get_args(typ)
            if isinstance(value, str):
                value = [v for v in (s.strip() for s in value.strip("[]").split(",")) if v]
            if not isinstance(value, (list, tuple)):
                raise ValueError(value)
            return [item(v) for v in value]
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
                return value.lower() in ("true", "1", "yes")
            raise ValueError(value)
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        name = getattr(typ, "__name__", str(typ))
        raise ConfigError(f"{key}={value!r} is not a valid {name}", f"give {key} a {name} value") from None


def build(values: dict[str, Any]) -> TrainConfig:
    """Defaults overridden by dotted `values` (already checked keys) -> a validated TrainConfig."""
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    top: dict[str, Any] = {}
    for key, value in values.items():
        if key not in valid_keys():
            raise _unknown_key(key)
        value = coerce(key, value)
        if "." in key:
            section, name = key.split(".", 1)
            sections[section][name] = value
        else:
            top[key] = value
    return TrainConfig(**top, **{s: cls(**sections[s]) for s, cls in SECTIONS.items()})


def parse_override(text: str) -> tuple[str, Any]:
    """`section.field=value` -> (key, value as YAML reads it)."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value", "write e.g. --set loss.alpha=0.8")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key not in valid_keys():
        raise _unknown_key(key)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value
