"""Token ids of what the trainer learns from: rollouts as sampled, teacher traces as the policy would say them.

A teacher trace is rendered with the *policy's* chat template: the prompt is the template's
generation prompt, the completion is everything the template adds for the assistant turn (the
trace and its end-of-turn tokens), so SFT teaches the policy to stop where its template stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dypo_data.errors import ConfigError


@dataclass(frozen=True)
class TokenizedSequence:
    """Prompt and completion token ids; `old_logprobs` are the sampling logprobs when known."""

    prompt_ids: list[int]
    completion_ids: list[int]
    old_logprobs: list[float] | None = None
    truncated: bool = False


def check_chat_template(tokenizer: Any, model: str) -> None:
    """A policy needs a chat template to render prompts and teacher traces."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"the tokenizer of policy {model} has no chat template",
            "use an instruct/chat model, or add a `chat_template` to its tokenizer_config.json",
        )


def _ids(encoded: Any) -> list[int]:
    if isinstance(encoded, dict) or hasattr(encoded, "input_ids"):
        encoded = encoded["input_ids"]
    return list(encoded)


def render_prompt(tokenizer: Any, messages: list[dict]) -> list[int]:
    """The prompt as the policy sees it: chat template with the generation prompt."""
    return _ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))


def render_target(tokenizer: Any, messages: list[dict], completion: str, *, max_completion_tokens: int) -> TokenizedSequence:
    """A teacher trace as an SFT example in the policy's chat template (completion tokens end the turn)."""
    prompt = render_prompt(tokenizer, messages)
    full = _ids(tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": completion}], tokenize=True))
    if full[: len(prompt)] == prompt:
        completion_ids = full[len(prompt):]
    else:  # a template that renders the prompt differently once an answer follows: fall back to plain text + eos
        completion_ids = _ids(tokenizer(completion, add_special_tokens=False)) + [tokenizer.eos_token_id]
    truncated = len(completion_ids) > max_completion_tokens
    return TokenizedSequence(prompt, completion_ids[:max_completion_tokens], None, truncated)


def tokenize_rollout(tokenizer: Any, messages: list[dict], prompt_ids: list[int], completion_ids: list[int],
                     logprobs: list[float] | None, completion_text: str | None, *, max_completion_tokens: int) -> TokenizedSequence:
    """A rollout as sampled (stored token ids); re-tokenised from text only when ids were not stored."""
    if not completion_ids and completion_text is not None:
        prompt_ids = render_prompt(tokenizer, messages)
        completion_ids = _ids(tokenizer(completion_text, add_special_tokens=False))
        logprobs = None
    if not prompt_ids:
        prompt_ids = render_prompt(tokenizer, messages)
    truncated = len(completion_ids) > max_completion_tokens
    if logprobs is not None and len(logprobs) != len(completion_ids):
        logprobs = None
    return TokenizedSequence(
        list(prompt_ids),
        list(completion_ids[:max_completion_tokens]),
        list(logprobs[:max_completion_tokens]) if logprobs is not None else None,
        truncated,
    )
