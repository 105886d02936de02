"""`dypo-data cpu`: what this CPU runs fast, and the vLLM-CPU settings a job would choose here."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from dypo_data.cli.common import reporting


def cpu(
    dtype: Annotated[str, typer.Option(help="The dtype a job would ask for (auto: the model's, or float32 where bf16 is emulated).")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the profile and plan as JSON (for scripts).")] = False,
) -> None:
    """Print this CPU's vector extensions and the engine settings jobs choose from them.

    DYPO_CPU_ISA=avx2|avx512|avx512_bf16|amx overrides the detection, so the choices for another
    CPU can be tried on this one.

    Examples:

      dypo-data cpu

      DYPO_CPU_ISA=avx2 dypo-data cpu --json
    """
    with reporting():
        from dypo_data.backends.cpu import STEP_TOKENS, cpu_list, detect_cpu, plan_cpu_engine

        profile = detect_cpu()
        plan = plan_cpu_engine(profile, dtype=dtype, context_tokens=STEP_TOKENS)
        if as_json:
            print(json.dumps({
                "model_name": profile.model_name, "isa": profile.isa, "native_bf16": profile.native_bf16,
                "cores": cpu_list(profile.cores), "source": profile.source,
                "plan": {"dtype": plan.dtype, "step_tokens": plan.step_tokens, "omp_bind": plan.omp_bind,
                         "step_timeout_s": plan.step_timeout_s, "reasons": list(plan.reasons)},
            }))
        else:
            print(plan.describe())
