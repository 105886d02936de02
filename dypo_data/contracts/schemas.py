"""Arrow schemas of the store's tables.

Every shard carries its table name and `SCHEMA_VERSION` in the Parquet key-value metadata
(`dypo.table`, `dypo.schema_version`); readers check both and name the file when they differ.

Tables
- prompts:  one row per prompt; `answer` is the gold answer the verifier compares against.
- traces:   one row per completion (teacher trace, policy rollout or eval sample). Policy rollouts
            carry the token ids and the sampling logprob of each completion token.
- verdicts: one row per (trace, verifier settings); kept apart so traces are never rewritten.
- train_metrics: one row per (training run, step, metric name): the trainer's log, long format.
- train_samples: one row per (training run, step, prompt): the tier the gate saw, where the prompt
            was routed (sft | rl | skip:<reason>), its rollout group and the teacher trace trained on.
            Joins train_metrics to the prompts, groups and traces a step learned from.
- eval_results: one row per (evaluation run, model, policy version, benchmark, metric): what
            `dypo-data eval` measured (avg@k, pass@j, maj@k with a bootstrap interval; ungradable
            samples, truncation rate, mean length), long format. `settings` holds everything the
            numbers depend on (sampling, k, instruction, verifier, bootstrap, prompt set) and
            `settings_hash` its hash; a rerun with the same settings supersedes the older rows.
"""

from __future__ import annotations

import enum

import pyarrow as pa

SCHEMA_VERSION = 1

TABLE_KEY = b"dypo.table"
VERSION_KEY = b"dypo.schema_version"


class Role(str, enum.Enum):
    """Who produced a trace. Eval samples (`dypo-data eval`) carry a policy version but no group:
    they are measurements, never training data."""

    TEACHER = "teacher"
    POLICY = "policy"
    EVAL = "eval"


class VerdictStatus(str, enum.Enum):
    """Why a verdict is what it is.

    ok:          the answer was extracted and compared; `correct` is True or False.
    no_answer:   the completion states no final answer; `correct` is False, reward 0.
    parse_error: an answer was found but it or the gold could not be parsed; `correct` is null.
    timeout:     the comparison exceeded its time limit; `correct` is null.
    error:       the verifier crashed on this item; `correct` is null.
    """

    OK = "ok"
    NO_ANSWER = "no_answer"
    PARSE_ERROR = "parse_error"
    TIMEOUT = "timeout"
    ERROR = "error"


_TS = pa.timestamp("us", tz="UTC")
_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def _schema(table: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={TABLE_KEY: table.encode(), VERSION_KEY: str(SCHEMA_VERSION).encode()})


PROMPTS = _schema(
    "prompts",
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string()),
        pa.field("problem", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("messages", _MESSAGES, nullable=False),
        pa.field("metadata", pa.string()),  # JSON object: extra columns of the input row
        pa.field("origin", pa.string()),  # file the prompt was loaded from
        pa.field("created_at", _TS),
    ],
)

TRACES = _schema(
    "traces",
    [
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string()),
        pa.field("role", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),  # the name the user gave the model
        pa.field("model_path", pa.string()),
        pa.field("group_id", pa.string()),  # policy rollouts of one prompt under one setting
        pa.field("sample_idx", pa.int32(), nullable=False),
        pa.field("policy_version", pa.string()),
        pa.field("completion", pa.string(), nullable=False),
        pa.field("num_tokens", pa.int32()),
        pa.field("finish_reason", pa.string()),
        pa.field("sampling", pa.string()),  # JSON: the generation settings of this trace
        pa.field("settings_hash", pa.string()),
        pa.field("backend", pa.string()),  # vllm | openai | transformers | import
        pa.field("source", pa.string()),  # "generated" or "import:<format>:<file>"
        pa.field("source_correct", pa.bool_()),  # correctness flag shipped with imported data
        pa.field("gen_seconds", pa.float64()),  # wall time of the request (server) or batch share
        pa.field("created_at", _TS),
        pa.field("prompt_token_ids", pa.list_(pa.int32())),
        pa.field("completion_token_ids", pa.list_(pa.int32())),
        pa.field("completion_logprobs", pa.list_(pa.float32())),  # sampling logprob per token
    ],
)

VERDICTS = _schema(
    "verdicts",
    [
        pa.field("verdict_id", pa.string(), nullable=False),
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("reward", pa.float32()),  # null when the trace could not be graded
        pa.field("correct", pa.bool_()),  # null when the trace could not be graded
        pa.field("extracted_answer", pa.string()),
        pa.field("gold", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("verifier", pa.string(), nullable=False),
        pa.field("verifier_version", pa.string()),
        pa.field("settings", pa.string()),  # JSON: the verifier settings
        pa.field("settings_hash", pa.string(), nullable=False),
        pa.field("seconds", pa.float64()),
        pa.field("created_at", _TS),
    ],
)

TRAIN_METRICS = _schema(
    "train_metrics",
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
        pa.field("name", pa.string(), nullable=False),  # slash-namespaced: loss/sft, tier/hard, ...
        pa.field("value", pa.float64()),
        pa.field("created_at", _TS),
    ],
)

TRAIN_SAMPLES = _schema(
    "train_samples",
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string()),  # the rollout group graded (null: no rollouts, e.g. SFT only)
        pa.field("tier", pa.string(), nullable=False),  # easy | mid | hard | unscored
        pa.field("route", pa.string(), nullable=False),  # sft | rl | sft+rl | skip:<reason>
        pa.field("teacher_trace_id", pa.string()),  # the SFT target, when one was trained on
        pa.field("n_rollouts", pa.int32()),
        pa.field("n_correct", pa.int32()),
        pa.field("created_at", _TS),
    ],
)

EVAL_RESULTS = _schema(
    "eval_results",
    [
        pa.field("run_id", pa.string(), nullable=False),  # the `dypo-data eval` run that computed the row
        pa.field("model", pa.string(), nullable=False),  # the model's name (a training run's name for --run)
        pa.field("policy_version", pa.string(), nullable=False),  # "base", or the training step of a checkpoint
        pa.field("benchmark", pa.string(), nullable=False),  # the prompt set's name (file stem unless named)
        pa.field("metric", pa.string(), nullable=False),  # avg@k, pass@j, maj@k, ungradable, truncation_rate, ...
        pa.field("value", pa.float64()),  # NaN when no problem counts for the metric
        pa.field("low", pa.float64()),  # bootstrap interval (null for counts and rates without one)
        pa.field("high", pa.float64()),
        pa.field("n_problems", pa.int32(), nullable=False),  # problems the value rests on
        pa.field("k", pa.int32(), nullable=False),  # samples per problem
        pa.field("settings", pa.string(), nullable=False),  # JSON: what the numbers depend on
        pa.field("settings_hash", pa.string(), nullable=False),
        pa.field("created_at", _TS),
    ],
)

TABLES: dict[str, pa.Schema] = {
    "prompts": PROMPTS,
    "traces": TRACES,
    "verdicts": VERDICTS,
    "train_metrics": TRAIN_METRICS,
    "train_samples": TRAIN_SAMPLES,
    "eval_results": EVAL_RESULTS,
}
