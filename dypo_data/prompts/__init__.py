"""Prompt sets: loaders for the formats people have, and a generator of verifiable math problems.

`load_prompts(PromptSource(path))` reads JSONL, Parquet or a saved Hugging Face dataset into the prompts
table (and the teacher traces the data carries into the traces table). The generator lives in
`dypo_data.prompts.synthetic`.
"""

from dypo_data.prompts.formats import DEFAULT_INSTRUCTION, FORMAT_NAMES, FORMATS, ColumnMap, Format
from dypo_data.prompts.loaders import LoadedPrompts, PromptSource, load_prompts

__all__ = [
    "DEFAULT_INSTRUCTION",
    "FORMATS",
    "FORMAT_NAMES",
    "ColumnMap",
    "Format",
    "LoadedPrompts",
    "PromptSource",
    "load_prompts",
]
