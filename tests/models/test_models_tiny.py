"""The tiny model kit and model resolution."""

from __future__ import annotations

import json

import pytest

from dypo_data.errors import BackendError, ConfigError
from dypo_data.models import ModelRef, TinyModelConfig, build_tiny_model, build_tokenizer, resolve_model


def test_tokenizer_is_character_level():
    tok = build_tokenizer()
    text = "Solve 3x + 5 = 20 for x ∈ ℝ? Ünd π ≈ 3.14.\n\tAnswer: \\boxed{5}"
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text)  # one token per character
    assert tok.decode(ids, skip_special_tokens=True) == text.replace("ℝ", "")  # ℝ is not in the vocabulary
    assert tok.convert_ids_to_tokens(ids[text.index("ℝ")]) == "<unk>"
    every = tok.decode(list(range(len(tok))), skip_special_tokens=True)
    assert "\ufffd" not in every and len(every) == len(tok) - 4  # every token decodes to one valid character


def test_chat_template_is_chatml():
    tok = build_tokenizer()
    text = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert tok.eos_token == "<|im_end|>"


def test_tiny_model_dir_loads_in_transformers(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["hidden_size"] == 64 and config["num_attention_heads"] == 2 and config["num_hidden_layers"] == 2
    ids = tok("hello", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, 5, len(tok))
    assert (tiny_model_dir / "generation_config.json").is_file()


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    from safetensors.torch import load_file

    a = load_file(build_tiny_model(tmp_path / "a", seed=7) / "model.safetensors")
    b = load_file(build_tiny_model(tmp_path / "b", seed=7) / "model.safetensors")
    c = load_file(build_tiny_model(tmp_path / "c", seed=8) / "model.safetensors")
    assert a.keys() == b.keys() == c.keys()
    assert all((a[k] == b[k]).all() for k in a)
    assert any(not (a[k] == c[k]).all() for k in a if not k.endswith("norm.weight"))


def test_rebuild_is_skipped_or_replaces(tmp_path):
    out = build_tiny_model(tmp_path / "m", seed=1)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(tmp_path / "m", seed=1) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp  # same arguments: kept
    build_tiny_model(tmp_path / "m", seed=2)
    assert json.loads((out / "dypo_tiny.json").read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary leftovers


def test_tiny_config_is_validated():
    with pytest.raises(ConfigError, match="num_heads"):
        TinyModelConfig(hidden_size=64, num_heads=3)
    with pytest.raises(ConfigError, match="num_kv_heads"):
        TinyModelConfig(num_heads=2, num_kv_heads=3)


def test_resolve_tiny_and_paths(tmp_path):
    ref = resolve_model("tiny:3", cache_dir=tmp_path)
    assert isinstance(ref, ModelRef)
    assert ref.name == "tiny-seed3" and ref.path == tmp_path / "models" / "tiny-seed3"
    assert (ref.path / "config.json").is_file()
    assert resolve_model("tiny", cache_dir=tmp_path).name == "tiny-seed0"
    assert resolve_model(str(ref.path)).path == ref.path


def test_resolve_rejects_bad_specs(tmp_path):
    with pytest.raises(BackendError) as info:
        resolve_model(str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(info.value) and "directory" in info.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendError, match="config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(BackendError, match="seed"):
        resolve_model("tiny:abc", cache_dir=tmp_path)


def test_tiny_architecture_and_out_directory(tmp_path):
    """`dypo-data models tiny:S --layers/--hidden/--mlp [--out DIR]`: the architecture is the one asked for, cached
    under a name that carries it (the default keeps its old name), or built where --out says."""
    import subprocess
    import sys
    from pathlib import Path

    arch = TinyModelConfig(num_layers=3, hidden_size=128, num_heads=2, num_kv_heads=2, intermediate_size=256)
    ref = resolve_model("tiny:4", cache_dir=tmp_path / "cache", tiny=arch)
    assert ref.name == "tiny-seed4-3x128-mlp256" and ref.path.parent == tmp_path / "cache" / "models"
    config = json.loads((ref.path / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]) == (3, 128, 256)
    assert resolve_model("tiny:4", cache_dir=tmp_path / "cache", tiny=TinyModelConfig()).name == "tiny-seed4"

    script = Path(sys.executable).with_name("dypo-data")
    out = subprocess.run([str(script), "models", "tiny:2", "--layers", "3", "--hidden", "128", "--mlp", "256",
                          "--out", str(tmp_path / "teacher-init")], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\t")[0] == "teacher-init"
    assert json.loads((tmp_path / "teacher-init" / "config.json").read_text())["num_hidden_layers"] == 3
    bad = subprocess.run([str(script), "models", "smollm2", "--out", str(tmp_path / "x")], capture_output=True, text=True,
                         timeout=120, check=False)
    assert bad.returncode != 0 and "only tiny models" in bad.stderr
