"""`dypo-data eval` and `dypo-data eval-report`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from dypo_data.cli.common import field_help, out_console, parse_pairs, reporting, setup_logging, show_progress
from dypo_data.contracts import split_named_path
from dypo_data.errors import ConfigError, InputError
from dypo_data.prompts import DEFAULT_INSTRUCTION

from dypo_data.jobs.eval_report import ReportConfig as _R
from dypo_data.jobs.evaluate import EvalConfig as _E  # help texts: the one place an option is documented


def parse_prompt_sets(args: list[str], *, fmt: str, columns: list[str] | None) -> tuple:
    """`[NAME=]FILE_OR_DIR` -> Benchmarks: a file or saved dataset is one (named NAME or its stem), a
    directory of files gives one per .jsonl/.json/.parquet file (named by stem)."""
    from dypo_data.jobs.evaluate import Benchmark
    from dypo_data.prompts.readers import READABLE_SUFFIXES, is_saved_dataset

    colmap = parse_pairs(columns, "--column")
    out = []
    for arg in args:
        name, path = split_named_path(arg)
        p = Path(path).expanduser()
        if not p.exists():
            raise InputError(f"prompt set {path} does not exist",
                             "pass a JSONL/Parquet file, a saved dataset, or a directory of them, e.g. ../shared/benchmarks")
        if p.is_dir() and not is_saved_dataset(p):
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in READABLE_SUFFIXES and f.is_file())
            if not files:
                raise InputError(f"directory {path} holds no prompt file ({', '.join(READABLE_SUFFIXES)})",
                                 "point --prompts at a file or a directory of benchmark files")
            if name:
                raise ConfigError(f"--prompts {arg!r} names a directory of {len(files)} files",
                                  "name files one by one (NAME=FILE), or pass the directory without a name")
            out += [Benchmark(name=f.stem, path=str(f), format=fmt, columns=colmap) for f in files]
        else:
            out.append(Benchmark(name=name or p.stem, path=str(p), format=fmt, columns=colmap))
    return tuple(out)


def eval_models(models: list[str], runs: list[str], steps: str | None, spec_fields: dict[str, Any],
                cache_dir: str | None) -> tuple:
    """EvalModels of `--model` arguments (version base) and of every chosen checkpoint of each `--run`."""
    from dypo_data.backends import ModelSpec
    from dypo_data.cli.generate_cmd import parse_model_arg
    from dypo_data.jobs.evaluate import EvalModel
    from dypo_data.models.runs import parse_steps, run_checkpoints

    if not models and not runs:
        raise ConfigError("nothing to evaluate: no --model and no --run", "name a model (e.g. --model smollm2) or a run")
    if steps and not runs:
        raise ConfigError("--steps picks checkpoints of a --run, and no --run is given", "add --run RUNS/NAME")
    out = []
    for arg in models:
        name, path = parse_model_arg(arg, cache_dir=cache_dir)
        out.append(EvalModel(ModelSpec(name=name, path=path, **spec_fields)))
    wanted = parse_steps(steps)
    for arg in runs:
        name, run_dir = split_named_path(arg)
        name = name or Path(run_dir).expanduser().resolve().name
        for ckpt in run_checkpoints(run_dir, wanted):
            out.append(EvalModel(ModelSpec(name=name, path=str(ckpt.path), **spec_fields), policy_version=str(ckpt.step)))
    return tuple(out)


def parse_pass_at(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--pass-at {text!r} is not a list of integers", "write e.g. --pass-at 1,4,8") from None


def json_rows(rows: Any) -> list[dict]:
    """Rows as JSON-able dicts; NaN (a metric no problem counts for) becomes null, which JSON has."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows.to_pylist()]


def print_tables(rows: Any, caption: str) -> None:
    """One side-by-side table per benchmark (columns: model@version, rows: metrics)."""
    from dypo_data.jobs.eval_report import side_by_side

    for table in side_by_side(rows):
        out = Table(title=f"{table.benchmark}", title_justify="left", caption=caption, caption_justify="left")
        out.add_column("metric")
        for col in table.columns:
            out.add_column(col, justify="right")
        for metric, cells in table.rows:
            out.add_row(metric, *cells)
        out_console.print(out)


def eval_(
    store: Annotated[Path, typer.Option(help=field_help(_E, "store"))],
    prompts: Annotated[list[str], typer.Option(help="Prompt set as [NAME=]FILE_OR_DIR (repeatable): a JSONL/Parquet file or saved dataset (benchmark NAME, default its stem), or a directory of such files (one benchmark each).")],
    model: Annotated[Optional[list[str]], typer.Option(help="Model as NAME=PATH or PATH (repeatable); PATH may be smollm2 or tiny[:SEED]. Recorded at policy version 'base'.")] = None,
    run: Annotated[Optional[list[str]], typer.Option(help="A dypo-train run directory, [NAME=]RUNS/NAME (repeatable): every checkpoint, recorded as model NAME (default the directory's name) at policy version = its step.")] = None,
    steps: Annotated[Optional[str], typer.Option(help="Only these checkpoint steps of --run, e.g. 100,200.")] = None,
    prompt_format: Annotated[str, typer.Option("--format", help="Prompt file format: auto, problem_answer, question_answer, verl, openr1.")] = "auto",
    column: Annotated[Optional[list[str]], typer.Option(help="Map a prompt field to an input column, FIELD=COLUMN (repeatable).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help=field_help(_E, "k"))] = 8,
    pass_at: Annotated[Optional[str], typer.Option(help="The j of pass@j, comma-separated, each <= k (default 1, 2, 4, ... up to k, and k).")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (the paper evaluates at 0.6).")] = 0.6,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling probability mass.")] = 0.95,
    max_tokens: Annotated[int, typer.Option(help="Maximum completion tokens (the paper: 8192).")] = 8192,
    seed: Annotated[int, typer.Option(help="Sampling seed (sample i of a problem gets a seed derived from it).")] = 0,
    limit: Annotated[Optional[int], typer.Option(help=field_help(_E, "limit"))] = None,
    instruction: Annotated[str, typer.Option(help=field_help(_E, "instruction"))] = DEFAULT_INSTRUCTION,
    system_prompt: Annotated[Optional[str], typer.Option(help=field_help(_E, "system_prompt"))] = None,
    split: Annotated[str, typer.Option(help=field_help(_E, "split"))] = "test",
    backend: Annotated[str, typer.Option(help="vllm (default), openai (a running OpenAI-compatible server) or transformers.")] = "vllm",
    base_url: Annotated[Optional[list[str]], typer.Option(help="OpenAI-compatible server URL (repeat to spread over a fleet).")] = None,
    dtype: Annotated[str, typer.Option(help="Model dtype: auto, float32, bfloat16, float16 (bf16 scores move with batch size; float32 does not).")] = "auto",
    kv_cache_gib: Annotated[float, typer.Option(help="vLLM on CPU: KV cache size in GiB.")] = 2.0,
    eager: Annotated[bool, typer.Option("--eager/--compile", help="vLLM: eager mode starts in seconds; compiled is ~20% faster after a long start.")] = True,
    tensor_parallel_size: Annotated[int, typer.Option("--tp", help="vLLM: tensor-parallel GPUs per engine.")] = 1,
    max_model_len: Annotated[Optional[int], typer.Option(help="vLLM: context length (default: the model's).")] = None,
    workers: Annotated[int, typer.Option(help="Grading worker processes.")] = 2,
    timeout: Annotated[float, typer.Option(help="Grading time limit per item, seconds.")] = 5.0,
    bootstrap_seed: Annotated[int, typer.Option(help=field_help(_E, "bootstrap_seed"))] = 0,
    flush_every: Annotated[int, typer.Option(help=field_help(_E, "flush_every"))] = 256,
    cache_dir: Annotated[Optional[str], typer.Option(help="Where built-in models are cached (default $DYPO_CACHE or ~/.cache/dypo).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, no table.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary and its results as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log engine and job details.")] = False,
) -> None:
    """Evaluate models, or every checkpoint of a training run, on benchmarks: avg@k, pass@j, maj@k with intervals.

    Samples, verdicts and metrics go to the store (role 'eval' traces, the eval_results table); a
    killed eval, run again, generates only the missing samples.

    Examples:

      dypo-data eval --store st --model smollm2 --prompts ../shared/benchmarks/math500.jsonl -k 8 --max-tokens 1024

      dypo-data eval --store st --run runs/dypo-20261125-101500 --steps 100,200 --prompts ../shared/benchmarks

      dypo-data eval --store st --model qwen=/models/qwen --prompts aime=aime24.jsonl -k 32 --dtype float32
    """
    setup_logging(verbose)
    with reporting():
        from dypo_data.backends import SamplingConfig
        from dypo_data.grading import VerifierConfig
        from dypo_data.jobs.evaluate import EvalConfig, run_eval

        from dypo_data.evaluation.summary import check_pass_at, default_pass_at

        if k < 1:  # before any model is built or run directory read
            raise ConfigError(f"-k {k}: at least one sample per problem is needed", "use -k 1 or more (the paper samples 8)")
        check_pass_at(parse_pass_at(pass_at) or default_pass_at(k), k)
        benchmarks = parse_prompt_sets(prompts, fmt=prompt_format, columns=column)
        options: dict[str, Any] = {}
        if backend == "openai":
            options = {"base_urls": tuple(base_url or ())}
        elif base_url:
            raise ConfigError(f"--base-url is for --backend openai, not {backend}", "add --backend openai")
        spec_fields = dict(dtype=dtype, max_model_len=max_model_len, enforce_eager=eager, kv_cache_gib=kv_cache_gib,
                           tensor_parallel_size=tensor_parallel_size)
        models = eval_models(model or [], run or [], steps, spec_fields, cache_dir)
        cfg = EvalConfig(
            store=str(store), models=models, benchmarks=benchmarks, k=k, pass_at=parse_pass_at(pass_at),
            sampling=SamplingConfig(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed),
            instruction=instruction, system_prompt=system_prompt, split=split, limit=limit, backend=backend,
            backend_options=options, verifier=VerifierConfig(workers=workers, timeout_s=timeout),
            bootstrap_seed=bootstrap_seed, flush_every=flush_every, progress=show_progress(quiet, as_json),
        )
        outcome = run_eval(cfg)
        if as_json:
            print(json.dumps({"run_id": outcome.stats.run_id, "counts": dict(outcome.stats.counts),
                              "results": json_rows(outcome.results)}, default=str))
        elif not quiet:
            print_tables(outcome.results, f"k={k}, temperature {temperature}, top_p {top_p}, max_tokens {max_tokens}; "
                                          "[95% bootstrap interval over problems]")


def eval_report(
    store: Annotated[Path, typer.Option(help=field_help(_R, "store"))],
    model: Annotated[Optional[list[str]], typer.Option(help="Only this model (repeatable).")] = None,
    benchmark: Annotated[Optional[list[str]], typer.Option(help="Only this benchmark (repeatable).")] = None,
    out: Annotated[Optional[Path], typer.Option(help=field_help(_R, "out"))] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON lines.")] = False,
) -> None:
    """Compare stored evaluations side by side; with --out, plot each metric against training step for runs.

    Examples:

      dypo-data eval-report --store st

      dypo-data eval-report --store st --benchmark math500 --model my-run --out plots/
    """
    with reporting():
        from dypo_data.jobs.eval_report import ReportConfig, run_report

        report = run_report(ReportConfig(store=str(store), models=tuple(model or ()), benchmarks=tuple(benchmark or ()),
                                         out=str(out) if out else None))
        if as_json:
            for row in json_rows(report.rows):
                print(json.dumps(row, default=str))
            return
        print_tables(report.rows, "the newest evaluation of each model@version; [95% bootstrap interval]")
        for path in report.plots:
            out_console.print(f"wrote {path}", highlight=False)
        if out and not report.plots:
            out_console.print("no model has two or more training steps evaluated: nothing to plot", highlight=False)
