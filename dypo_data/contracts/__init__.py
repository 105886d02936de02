"""On-disk contracts: table schemas, statuses and stable ids. Depends on stdlib and pyarrow only."""

from dypo_data.contracts.ids import (
    group_id, prompt_id, settings_hash, split_named_path, stable_hash, trace_id, verdict_id,
)
from dypo_data.contracts.schemas import (
    EVAL_RESULTS,
    PROMPTS,
    SCHEMA_VERSION,
    TABLES,
    TRACES,
    VERDICTS,
    Role,
    VerdictStatus,
)

__all__ = [
    "EVAL_RESULTS",
    "PROMPTS",
    "SCHEMA_VERSION",
    "TABLES",
    "TRACES",
    "VERDICTS",
    "Role",
    "VerdictStatus",
    "group_id",
    "prompt_id",
    "settings_hash",
    "split_named_path",
    "stable_hash",
    "trace_id",
    "verdict_id",
]
