"""The `dypo-train` command.

Examples:
    dypo-train recipes                                           # the recipes and what each does
    dypo-train run --recipe dypo --store demo_store --policy smollm2
    dypo-train run --recipe grpo --store demo_store --mode online --set rollout.k=4 --set run.max_steps=20
    dypo-train run --config my.yaml --set loss.alpha=0.8         # a YAML recipe of your own
    dypo-train run --resume runs/dypo-20261125-101500            # continue a killed run
    dypo-train config --recipe dypo-code                         # print the resolved config
    accelerate launch --multi_gpu --num_processes 2 -m dypo_train.cli run --store demo_store   # data parallel
    dypo-train serve-rollouts --policy DIR --name tiny --servers 2 --port 8001   # servers for rollout.backend=server
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dypo_data.errors import DypoError, Terminated, sigterm_as_interrupt

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train a policy with DYPO or one of its baselines.")

RecipeOpt = Annotated[Optional[str], typer.Option("--recipe", "-r", help="Named recipe (see `dypo-train recipes`); default dypo.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (sections model, data, loss, optim, rollout, run).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a field: section.field=value (repeatable).")]


def _fail(exc: DypoError) -> None:
    hint = f" (fix: {exc.hint})" if exc.hint else ""
    print(f"error: {exc.message}{hint}", file=sys.stderr)
    raise typer.Exit(exc.exit_code)


def _setup_logging(verbose: bool) -> None:
    if not verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("dypo_data.backends.cpu").setLevel(logging.INFO)  # the settings chosen for this CPU


def _overrides(sets: list[str] | None, **flags: object) -> list[str]:
    """Shortcut flags become overrides (before --set, so --set wins)."""
    out = [f"{key}={value}" for key, value in flags.items() if value is not None]
    return out + list(sets or [])


class ConsoleReporter:
    """Per-step lines on stdout; a progress bar with the step rate on stderr when it is a terminal."""

    def __init__(self) -> None:
        self.bar = None

    def start(self, total: int, initial: int) -> None:
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", desc="dypo-train", file=sys.stderr)

    def step(self, step: int, line: str | None) -> None:
        if line:
            if self.bar is not None:
                self.bar.write(line, file=sys.stdout)
            else:
                print(line, flush=True)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@app.command()
def run(
    recipe: RecipeOpt = None,
    config: ConfigOpt = None,
    store: Annotated[Optional[str], typer.Option(help="Store made by dypo-data (data.store).")] = None,
    policy: Annotated[Optional[str], typer.Option(help="Policy: model dir, smollm2 or tiny[:SEED] (model.policy).")] = None,
    mode: Annotated[Optional[str], typer.Option(help="offline or online (data.mode).")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Optimizer steps (run.max_steps).")] = None,
    output_dir: Annotated[Optional[str], typer.Option(help="Where runs are written (run.output_dir).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run name (run.name).")] = None,
    sets: SetOpt = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this directory from its last checkpoint.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO (vLLM too).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and the final summary.")] = False,
) -> None:
    """Train: offline on the store's rollout groups, or online sampling from the policy as it trains."""
    _setup_logging(verbose)
    try:
        from dypo_train.recipes import resolve

        overrides = _overrides(sets, **{"data.store": store, "model.policy": policy, "data.mode": mode, "run.max_steps": max_steps,
                                        "run.output_dir": output_dir, "run.name": name})
        from dypo_train.loop.run import resolve_resume, run_training

        cfg = resolve_resume(resume, recipe, config, overrides) if resume is not None else resolve(recipe, config, overrides)
        with sigterm_as_interrupt():  # SIGTERM stops the run as Ctrl-C does
            run_dir, history = run_training(cfg, resume=resume, reporter=None if quiet else ConsoleReporter())
    except DypoError as exc:
        _fail(exc)
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"{what}: continue with `dypo-train run --resume RUN_DIR` from the last checkpoint", file=sys.stderr)
        raise typer.Exit(Terminated.exit_code if isinstance(exc, Terminated) else 130) from None
    last = history[-1] if history else {}
    summary = {"run_dir": str(run_dir), "steps": len(history), "reward_mean_last": last.get("reward/mean"),
               "offline_ratio_last": last.get("tier/offline_ratio")}
    if os.environ.get("RANK", "0") == "0":  # under accelerate launch / torchrun, one summary
        print(json.dumps(summary))


@app.command()
def recipes() -> None:
    """List the recipes with the first line of their description."""
    from importlib import resources

    from dypo_train.recipes import recipe_names

    for name in recipe_names():
        text = resources.files("dypo_train.recipes").joinpath(f"{name}.yaml").read_text()
        first = next((line[2:] for line in text.splitlines() if line.startswith("# ")), "")
        print(f"{name:18s} {first}")


@app.command("config")
def show_config(
    recipe: RecipeOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    help_fields: Annotated[bool, typer.Option("--help-fields", help="Print every field with its help instead.")] = False,
) -> None:
    """Print the resolved config (defaults < recipe < file < --set) as YAML."""
    try:
        if help_fields:
            from dypo_train.config import field_help

            for key, text in field_help().items():
                print(f"{key}\n    {text}")
            return
        import yaml

        from dypo_train.recipes import resolve

        print(yaml.safe_dump(resolve(recipe, config, sets or []).to_dict(), sort_keys=False), end="")
    except DypoError as exc:
        _fail(exc)


@app.command("serve-rollouts")
def serve_rollouts(
    policy: Annotated[Path, typer.Option(help="The policy's model directory (the run's model.policy).")],
    name: Annotated[str, typer.Option(help="Served model name: the run's model.name (or its policy spec).")],
    servers: Annotated[int, typer.Option(help="How many servers (each on its own cores on CPU).")] = 1,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the first server; the others take the next ones.")] = 8001,
    kv_cache_gib: Annotated[float, typer.Option(help="CPU KV cache of each server (GiB).")] = 1.0,
    weight_transfer: Annotated[str, typer.Option(help="The run's rollout.weight_transfer: shared_path (any machine), nccl or "
                                                      "ipc (vLLM's engines; CUDA only).")] = "shared_path",
    tensor_parallel_size: Annotated[int, typer.Option(help="GPUs each server splits the model over.")] = 1,
    log_dir: Annotated[Optional[Path], typer.Option(help="Where the servers' logs go (default: the temp dir).")] = None,
) -> None:
    """Start vLLM servers for `run --set rollout.backend=server`; they stop on Ctrl-C."""
    import time

    _setup_logging(False)
    from dypo_train.online.serve import rollout_server_spec, start_rollout_servers

    try:
        with sigterm_as_interrupt():
            spec = rollout_server_spec(policy, name=name, kv_cache_gib=kv_cache_gib, tensor_parallel_size=tensor_parallel_size)
            started = start_rollout_servers(spec, count=servers, host=host, port=port, log_dir=log_dir,
                                            weight_transfer=weight_transfer)
            urls = ",".join(s.base_url for s in started)
            print(f"serving {name} at {urls}\ntrain with: --set rollout.backend=server --set rollout.base_urls=[{urls}] "
                  f"--set model.name={name} --set rollout.weight_transfer={weight_transfer}", flush=True)
            try:
                while not (dead := [s for s in started if s.process.poll() is not None]):
                    time.sleep(1.0)
            finally:
                for s in started:
                    s.stop()
    except DypoError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        return
    from dypo_data.errors import BackendError

    _fail(BackendError(f"rollout server {dead[0].base_url} exited: {dead[0].log_tail(300)!r}", f"see its log {dead[0].log_path}"))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
