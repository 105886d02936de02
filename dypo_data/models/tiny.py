"""Tiny random Llama models for tests and fast demos.

A tiny model is a normal Hugging Face model directory (config, safetensors weights, tokenizer,
chat template, generation config) that both vLLM and transformers load. Its weights are random, so
it writes gibberish, but every part of the pipeline (templating, sampling, logprobs, weight sync,
training) runs on it in seconds.

- Tokenizer: character level. A `tokenizers` BPE model with no merges maps each character to one
  token; `decoders.Fuse()` joins the characters back without spaces. The vocabulary holds printable
  ASCII, Latin-1 letters, Greek and common maths symbols; any other character becomes `<unk>` (there
  are no byte tokens, so whatever the model samples decodes to valid text, the same way in vLLM's
  incremental detokenizer and in `tokenizer.decode`).
- Chat template: ChatML (`<|im_start|>role\\ncontent<|im_end|>\\n`), generation ends at `<|im_end|>`.
- Model: Llama, 2 layers, hidden 64, 2 heads. vLLM's CPU attention needs a head size in
  {32, 64, 80, 96, 112, 128, ...}, so hidden 64 needs 2 heads (1 or 2 work, 4 does not).

The same arguments give the same files: weights are drawn from a generator seeded with `seed`.
"""

from __future__ import annotations

import json
import os
import shutil
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dypo_data.errors import ConfigError
from dypo_data.models.files import make_tmp_dir, move_into_place

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, UNK_TOKEN)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Characters with their own token; anything else becomes <unk>.
CHARACTERS = (
    string.printable
    + "".join(chr(c) for c in range(0xC0, 0x100))  # Latin-1 letters
    + "".join(chr(c) for c in range(0x391, 0x3CA) if c != 0x3A2)  # Greek
    + "×÷±≤≥≠≈∞√∑∏∫∂∇∈∉⊂⊆∪∩∀∃→←↔⇒⇔°·…–—‘’“”€£¥§¶©®µ½¼¾²³¹"
)

SPEC_FILE = "dypo_tiny.json"  # the arguments a directory was built from; a rebuild with the same ones is skipped


@dataclass(frozen=True)
class TinyModelConfig:
    seed: int = field(default=0, metadata={"help": "Seed of the random weights; models with different seeds differ."})
    num_layers: int = field(default=2, metadata={"help": "Transformer blocks."})
    hidden_size: int = field(default=64, metadata={"help": "Width of the residual stream."})
    num_heads: int = field(default=2, metadata={"help": "Attention heads; hidden_size / num_heads must be 32, 64, 80, ... for vLLM on CPU."})
    num_kv_heads: int = field(default=2, metadata={"help": "Key/value heads (grouped-query attention when fewer than num_heads)."})
    intermediate_size: int = field(default=128, metadata={"help": "Width of the MLP."})
    max_position_embeddings: int = field(default=4096, metadata={"help": "Longest sequence (prompt + completion) in tokens."})
    init_std: float = field(default=0.02, metadata={"help": "Standard deviation of the random weights."})
    tie_word_embeddings: bool = field(default=False, metadata={"help": "Share the input embedding and the output head."})

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}; "
                "use hidden 64 with 2 heads"
            )
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_heads={self.num_heads} must be divisible by num_kv_heads={self.num_kv_heads}")
        if self.init_std <= 0:
            raise ConfigError(f"init_std={self.init_std} must be > 0")


def build_tokenizer():
    """The character-level `PreTrainedTokenizerFast` with ChatML special tokens and chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    for char in CHARACTERS:
        vocab.setdefault(char, len(vocab))

    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=1_000_000,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _build_model(cfg: TinyModelConfig, vocab_size: int, special_ids: dict[str, int]):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        initializer_range=cfg.init_std,
        rms_norm_eps=1e-5,
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=special_ids[IM_START],
        eos_token_id=special_ids[IM_END],
        pad_token_id=special_ids[PAD_TOKEN],
        dtype="float32",
    )
    model = LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * cfg.init_std)
    model.generation_config = GenerationConfig(
        bos_token_id=special_ids[IM_START],
        eos_token_id=special_ids[IM_END],
        pad_token_id=special_ids[PAD_TOKEN],
    )
    return model


def build_tiny_model(out_dir: str | os.PathLike, *, seed: int = 0, config: TinyModelConfig | None = None) -> Path:
    """Write a tiny random model directory at `out_dir` and return its path.

    `config` overrides the architecture (its seed is replaced by `seed`). A directory already built
    from the same arguments is kept as is; one built from other arguments is replaced. The files are
    written to a temporary directory next to `out_dir` and renamed into place, so a killed build
    leaves no half model.
    """
    cfg = TinyModelConfig(**{**asdict(config or TinyModelConfig()), "seed": seed})
    out = Path(out_dir).expanduser().resolve()
    spec = {"kind": "dypo-tiny-llama", "version": 2, **asdict(cfg)}
    if _built_from(out, spec):
        return out

    tmp = make_tmp_dir(out)
    try:
        tokenizer = build_tokenizer()
        special_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        model = _build_model(cfg, len(tokenizer), special_ids)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        move_into_place(tmp, out, keep_existing=_built_from(out, spec))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _built_from(out: Path, spec: dict) -> bool:
    path = out / SPEC_FILE
    try:
        return json.loads(path.read_text()) == spec
    except (OSError, ValueError):
        return False
