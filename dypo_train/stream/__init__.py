"""Prompt groups and teacher pools read from a dypo-data store, step by step."""

from dypo_train.stream.reader import StoreStream, StreamPlan, total_steps
from dypo_train.stream.tokens import TokenizedSequence, render_target, tokenize_rollout
from dypo_train.stream.types import PromptGroup, Rollout, TeacherTrace

__all__ = ["PromptGroup", "Rollout", "StoreStream", "StreamPlan", "TeacherTrace", "TokenizedSequence", "render_target",
           "tokenize_rollout", "total_steps"]
