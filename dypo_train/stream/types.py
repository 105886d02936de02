"""What the stream hands the training loop: one `PromptGroup` per prompt of a step."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rollout:
    """One policy rollout with its reward (None: the verifier could not grade it)."""

    trace_id: str
    sample_idx: int
    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    logprobs: list[float] | None  # sampling logprob of each completion token, when stored
    reward: float | None


@dataclass(frozen=True)
class TeacherTrace:
    """A teacher trace the verifier marked correct: a candidate SFT target."""

    trace_id: str
    model: str
    completion: str


@dataclass(frozen=True)
class PromptGroup:
    """A prompt, its rollout group (may be empty) and its verified teacher traces."""

    prompt_id: str
    messages: list[dict]
    answer: str
    group_id: str | None = None
    rollouts: list[Rollout] = field(default_factory=list)
    teachers: list[TeacherTrace] = field(default_factory=list)
