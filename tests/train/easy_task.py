"""An easy procedural maths task a tiny character-level policy learns in a few dozen online steps.

"Which digit is this? 777" -> `\\boxed{7}`: the prompt writes one digit REPEAT times at its end, the
gold answer is that digit. For the tiny character model (dypo_data.models.tiny, ChatML template) the
answer `\\boxed{7}<|im_end|>` is nine fixed characters and one digit that sits a fixed distance back
in the prompt. Written once, the digit takes a sharp attention pattern the model finds slowly (a
warm-started online run stayed at chance for 40 steps); written three times it also shows in an
average over the prompt, and copying is learnt in a few dozen steps.

A short SFT warm start on the teacher traces (`sft` recipe, 40 steps of 8 prompts at lr 3e-3)
teaches the format first: about 60% of samples at temperature 1 are a boxed answer, about 8% are
right (chance: a tenth of the boxed ones). The online DYPO run then learns which digit, from its own
rewards on mixed groups and the SFT targets of its hard ones. From random init every group stays
hard for a long time, so online runs start from the warm start.

`build_easy_store(root)` writes what `dypo-data import` + `generate --teacher` + `verify` would
leave behind, with the real row builders, `ShardWriter` and the real verify job (math-verify):

- prompts:  one per (phrasing, digit), source "easy-copy", gold answer the digit;
- traces:   teacher TEACHER answers every prompt with `\\boxed{d}` (all verified correct), and
            teacher SLOPPY answers a few prompts with the wrong digit (verified incorrect, so never
            an SFT target);
- verdicts: written by `dypo_data.jobs.verify.run_verify` (math-verify in its process pool).

`pad_prompts=True` prepends a long fixed preamble (prompts of about 490 tokens, several KV blocks), so prompt blocks
land in vLLM's prefix cache and a weight sync that left stale cache entries would show up in the
sampling logprobs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from dypo_data.contracts import PROMPTS, TRACES, prompt_id, settings_hash
from dypo_data.contracts.rows import trace_row
from dypo_data.store import ShardWriter

SOURCE = "easy-copy"
TEACHER = "teacher-copy"
SLOPPY = "teacher-sloppy"
REPEAT = 3  # the digit is written this many times: the signal survives uniform attention, so copying is learnt fast
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
PHRASINGS = ("Which digit is this? {x}", "Copy the digit: {x}", "Name the digit in {x}", "What digit repeats here: {x}")
PREAMBLE = ("You are a careful assistant. Read the request at the end of this message, then reply with nothing "
            "but the requested answer written inside \\boxed{}: no other words, no working, no explanation, no "
            "punctuation and no second answer. Every request names exactly one digit from 0 to 9, and the answer "
            "is that digit. Answers that are not boxed, or that box more than one thing, count as wrong, and so "
            "does anything written after the box. Keep it short. ")


@dataclass
class EasyStore:
    root: Path
    prompts: list[dict]  # prompts rows
    teacher_traces: list[dict]  # traces rows of TEACHER (all correct)
    sloppy_traces: list[dict]  # traces rows of SLOPPY (all wrong)


def easy_problems(*, pad_prompts: bool = False, digits: str = "0123456789", repeat: int = REPEAT,
                  phrasings: tuple[str, ...] = PHRASINGS) -> list[tuple[str, str]]:
    """(problem, answer) pairs: every phrasing with every digit (written `repeat` times)."""
    pre = PREAMBLE if pad_prompts else ""
    return [(pre + p.format(x=d * repeat), d) for p in phrasings for d in digits]


def _teacher_row(pid: str, model: str, text: str) -> dict:
    shash = settings_hash({"teacher": model, "task": SOURCE})
    return trace_row(prompt_id=pid, model=model, role="teacher", sample_idx=0, shash=shash, policy_version=None,
                     completion=text, num_tokens=len(text), finish_reason="stop", sampling_json="{}",
                     backend="openai", source="generated", run_id="easy-task", model_path=None, gen_seconds=0.0,
                     created_at=T0)


def build_easy_store(root: str | Path, *, pad_prompts: bool = False, digits: str = "0123456789",
                     phrasings: tuple[str, ...] = PHRASINGS, sloppy_every: int = 7) -> EasyStore:
    """Write the easy task into a new store at `root` and grade its teacher traces with math-verify."""
    from dypo_data.grading import VerifierConfig
    from dypo_data.jobs.verify import VerifyConfig, run_verify

    root = Path(root)
    prompts, good, sloppy = [], [], []
    for i, (problem, answer) in enumerate(easy_problems(pad_prompts=pad_prompts, digits=digits, phrasings=phrasings)):
        pid = prompt_id(SOURCE, problem)
        prompts.append({"prompt_id": pid, "source": SOURCE, "split": "train", "problem": problem, "answer": answer,
                        "messages": [{"role": "user", "content": problem}], "metadata": None, "origin": "easy_task.py",
                        "created_at": T0})
        good.append(_teacher_row(pid, TEACHER, f"\\boxed{{{answer}}}"))
        if i % sloppy_every == 0:
            sloppy.append(_teacher_row(pid, SLOPPY, f"\\boxed{{{(int(answer) + 1) % 10}}}"))
    writer = ShardWriter(root, "easy-task")
    writer.write("prompts", pa.Table.from_pylist(prompts, schema=PROMPTS))
    writer.write("traces", pa.Table.from_pylist(good + sloppy, schema=TRACES))
    run_verify(VerifyConfig(store=str(root), verifier=VerifierConfig(workers=1), progress=False))
    return EasyStore(root, prompts, good, sloppy)
