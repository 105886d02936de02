"""Builds what a run trains with: the Accelerator, policy, frozen reference, tokenizer, optimizers."""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dypo_data.backends.cpu import detect_cpu
from dypo_data.errors import BackendError, ConfigError
from dypo_train.config import TrainConfig
from dypo_train.stream.tokens import check_chat_template

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_TRACKERS = ("tensorboard", "wandb", "trackio")


@dataclass
class TrainSetup:
    accelerator: Any
    model: Any  # prepared (DDP/FSDP-wrapped where distributed)
    reference: Any | None  # frozen copy of the starting policy, eval mode, no grad
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    sft_optimizer: Any | None
    pad_id: int
    model_path: Path


def make_accelerator(cfg: TrainConfig, run_dir: Path) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    for tracker in cfg.run.report_to:
        if tracker not in _TRACKERS:
            raise ConfigError(f"run.report_to={tracker!r} is not a tracker dypo-train knows", f"use some of: {', '.join(_TRACKERS)}")
    mixed = cfg.model.mixed_precision
    if mixed == "bf16" and not _bf16_supported():
        log.warning("bf16 autocast is not supported here; training in %s", cfg.model.dtype)
        mixed = "no"
    elif mixed == "bf16" and not _has_accelerator_device() and not (cpu := detect_cpu()).native_bf16:
        log.warning("cpu %s: bf16 autocast would be emulated (several times slower), training in %s "
                    "(DYPO_CPU_ISA=amx forces bf16)", cpu.describe(), cfg.model.dtype)
        mixed = "no"
    launched = int(os.environ.get("WORLD_SIZE") or 1)  # set by accelerate launch / torchrun
    # Accelerate keeps one settings singleton per process; a second run in the same process (a notebook,
    # a test session, after a TRL trainer) would otherwise inherit the first one's mixed precision.
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)  # the process group (PartialState) is kept
    GradientState._reset_state()
    accelerator = Accelerator(
        mixed_precision=mixed,
        log_with=list(cfg.run.report_to) or None,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
        cpu=launched > 1 and not _has_accelerator_device(),  # without it accelerate gives each CPU process a run of its own
    )
    if launched > 1 and accelerator.num_processes != launched:
        raise ConfigError(f"{launched} processes were launched but accelerate joined {accelerator.num_processes}: each would train "
                          "the whole run alone", "launch with `accelerate launch --multi_gpu --num_processes N` or torchrun")
    return accelerator


def _has_accelerator_device() -> bool:
    probe = getattr(torch, "accelerator", None)
    if probe is not None and hasattr(probe, "is_available"):
        return bool(probe.is_available())
    return torch.cuda.is_available()


def _bf16_supported() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return True  # CPU autocast supports bf16


def load_policy(path: Path, dtype: str) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype])
    except (OSError, ValueError) as exc:
        raise BackendError(f"could not load policy from {path}: {exc}", "point model.policy at a Hugging Face causal LM directory") from exc
    return model


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    check_chat_template(tokenizer, str(path))
    return tokenizer


def pad_token_id(tokenizer: Any) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if tid is not None:
            return int(tid)
    return 0


def lr_lambda(warmup_steps: int):
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def build_setup(cfg: TrainConfig, model_path: Path, tokenizer: Any, accelerator: Any) -> TrainSetup:
    """Load and prepare every training component for `cfg` (`tokenizer`: `load_tokenizer(model_path)`)."""
    policy = load_policy(model_path, cfg.model.dtype)
    if cfg.model.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
    policy.config.use_cache = False
    policy.train()  # from_pretrained returns eval mode (dropout off)
    reference = None
    if cfg.model.reference == "policy" and _needs_reference(cfg):
        reference = copy.deepcopy(policy).eval().requires_grad_(False)
    opt = cfg.optim
    optimizer = torch.optim.AdamW(policy.parameters(), lr=opt.lr, betas=tuple(opt.betas), weight_decay=opt.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(opt.warmup_steps))
    sft_optimizer = None
    if opt.sft_lr > 0:
        sft_optimizer = torch.optim.AdamW(policy.parameters(), lr=opt.sft_lr, betas=tuple(opt.betas), weight_decay=opt.weight_decay)
        policy, optimizer, scheduler, sft_optimizer = accelerator.prepare(policy, optimizer, scheduler, sft_optimizer)
    else:
        policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    if reference is not None:
        reference = _place_reference(accelerator, reference)
    return TrainSetup(accelerator, policy, reference, tokenizer, optimizer, scheduler, sft_optimizer, pad_token_id(tokenizer), model_path)


def _needs_reference(cfg: TrainConfig) -> bool:
    loss = cfg.loss
    gal_on = loss.gate in ("dypo", "none", "rl") and (loss.alpha < 1.0 or loss.gal_mode == "additive")
    return loss.beta_kl > 0 or (gal_on and loss.gal_reference)


def _place_reference(accelerator: Any, reference: Any) -> Any:
    """The reference goes where the policy is; sharded setups (FSDP, ZeRO-3) shard it the same way."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        return accelerator.prepare_model(reference, evaluation_mode=True)
    return reference.to(accelerator.device)
