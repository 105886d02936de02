"""The training config: every shipped recipe validates, unknown keys name the closest valid one,
out-of-range values and broken cross-field rules name the field, and the layers stack as
defaults < recipe < file < --set. Also through `dypo-train config` (in-process CliRunner)."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from dypo_data.errors import ConfigError, InputError
from dypo_train.cli import app
from dypo_train.config import TrainConfig, build, field_help, valid_keys
from dypo_train.recipes import recipe_names, recipe_values, resolve

SHIPPED = ("dypo", "dypo-code", "dypo-no-gal", "dypo-no-grading", "dypo-one-teacher", "grpo", "luffy", "sft",
           "sft-then-grpo", "static-mix")


def write(tmp_path, text: str, name: str = "my.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# -- shipped recipes ---------------------------------------------------------------------------------


def test_every_recipe_is_listed():
    assert set(SHIPPED) <= set(recipe_names())


@pytest.mark.parametrize("name", recipe_names())
def test_shipped_recipe_resolves_and_validates(name):
    cfg = resolve(name)
    assert isinstance(cfg, TrainConfig) and cfg.recipe == name
    for key, value in recipe_values(name).items():  # the recipe's values arrive as written
        if key != "recipe":
            section, field = key.split(".")
            assert getattr(getattr(cfg, section), field) == value, key
    # and the resolved config round-trips through build (what a run directory's config.json holds)
    flat = {f"{s}.{k}": v for s, sec in cfg.to_dict().items() if isinstance(sec, dict) for k, v in sec.items()}
    assert build({**flat, "recipe": name}) == cfg


@pytest.mark.parametrize("name", recipe_names())
def test_shipped_recipe_validates_online(name):
    """Online mode adds the k >= 2 rule for RL gates; every recipe passes it at its own k."""
    assert resolve(name, overrides=["data.mode=online"]).data.mode == "online"


def test_recipe_semantics():
    assert resolve("dypo-no-gal").loss.alpha == 1.0
    assert resolve("grpo").loss.gate == "rl"
    assert resolve("sft").loss.gate == "sft" and resolve("sft").model.reference == "none"
    assert resolve("dypo-one-teacher").data.max_teachers == 1
    code = resolve("dypo-code")
    assert (code.loss.rl_loss, code.loss.gal_mode, code.optim.sft_buffer > 0, code.optim.sft_lr > 0) == ("gspo", "additive", True, True)


def test_every_field_has_help():
    helps = field_help()
    assert set(helps) == set(valid_keys())
    assert all(text.strip() for text in helps.values()), [k for k, v in helps.items() if not v.strip()]


def test_unknown_recipe_names_the_closest():
    with pytest.raises(ConfigError) as e:
        resolve("dyp")
    assert "dyp" in e.value.message and "'dypo'" in e.value.hint


# -- unknown keys ---------------------------------------------------------------------------------------


def test_unknown_key_in_yaml_names_closest(tmp_path):
    path = write(tmp_path, "recipe: dypo\nloss:\n  alpah: 0.3\n")
    with pytest.raises(ConfigError) as e:
        resolve(config_file=path)
    assert "loss.alpah" in e.value.message and "loss.alpha" in e.value.hint


def test_unknown_section_in_yaml(tmp_path):
    path = write(tmp_path, "optimiser:\n  lr: 1.0e-5\n")
    with pytest.raises(ConfigError) as e:
        resolve(config_file=path)
    assert "optimiser" in e.value.message


def test_unknown_key_in_set_names_closest():
    with pytest.raises(ConfigError) as e:
        resolve("dypo", overrides=["optim.learning_rate=1e-5"])
    assert "optim.learning_rate" in e.value.message
    with pytest.raises(ConfigError) as e:
        resolve("dypo", overrides=["run.max_step=3"])
    assert "run.max_step" in e.value.message and "run.max_steps" in e.value.hint


def test_set_without_equals():
    with pytest.raises(ConfigError) as e:
        resolve("dypo", overrides=["loss.alpha"])
    assert "loss.alpha" in e.value.message


def test_yaml_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError):
        resolve(config_file=write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(ConfigError) as e:
        resolve(config_file=write(tmp_path, "loss: 0.5\n", "b.yaml"))
    assert "loss" in e.value.message


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(InputError) as e:
        resolve(config_file=write(tmp_path, "loss: [unclosed\n"))
    assert "my.yaml" in e.value.message
    with pytest.raises(InputError) as e:
        resolve(config_file=tmp_path / "nope.yaml")
    assert "nope.yaml" in e.value.message


# -- ranges and cross-field rules -------------------------------------------------------------------------


@pytest.mark.parametrize("recipe, sets, field", [
    ("dypo", ["loss.alpha=1.5"], "loss.alpha"),
    ("dypo", ["loss.alpha=-0.1"], "loss.alpha"),
    ("static-mix", ["loss.sft_coef=2"], "loss.sft_coef"),
    ("dypo", ["loss.beta_gal=-1"], "loss.beta_gal"),
    ("dypo", ["loss.clip_eps=1.0"], "loss.clip_eps"),
    ("dypo", ["optim.lr=0"], "optim.lr"),
    ("dypo", ["optim.betas=[0.9, 1.0]"], "optim.betas"),
    ("dypo", ["run.prompts_per_step=0"], "run.prompts_per_step"),
    ("dypo", ["run.micro_batch_size=0"], "run.micro_batch_size"),
    ("dypo", ["run.max_steps=0", "run.epochs=0"], "run.max_steps"),
    ("dypo", ["rollout.k=0"], "rollout.k"),
    ("dypo", ["rollout.top_p=0"], "rollout.top_p"),
    ("grpo", ["data.mode=online", "rollout.k=1"], "rollout.k"),
    ("dypo", ["data.mode=online", "rollout.k=1"], "rollout.k"),
    ("luffy", ["rollout.k=1"], "rollout.k"),
    ("dypo", ["optim.sft_buffer=16"], "optim.sft_buffer"),
    ("dypo", ["optim.sft_lr=1e-5"], "optim.sft_buffer"),
    ("dypo", ["model.reference=none"], "model.reference"),
    ("grpo", ["model.reference=none", "loss.beta_kl=0.1"], "loss.beta_kl"),
    ("sft", ["run.sft_steps=5"], "run.sft_steps"),
    ("dypo", ["rollout.max_staleness=-1"], "rollout.max_staleness"),
    ("dypo", ["loss.rollout_is_cap=0.5"], "loss.rollout_is_cap"),
    ("dypo", ["loss.rollout_correction=tis", "data.old_logprobs=behaviour"], "loss.rollout_correction"),
])
def test_out_of_range_names_the_field(recipe, sets, field):
    with pytest.raises(ConfigError) as e:
        resolve(recipe, overrides=sets)
    assert field in e.value.message, e.value.message
    assert e.value.hint, "every config error says how to fix it"


def test_rules_that_pass():
    """The neighbours of the failing cases above are valid."""
    assert resolve("grpo", overrides=["data.mode=online", "rollout.k=2"]).rollout.k == 2
    assert resolve("sft", overrides=["data.mode=online", "rollout.k=1"]).rollout.k == 1  # SFT needs no group
    assert resolve("grpo", overrides=["rollout.k=1"]).rollout.k == 1  # offline runs use the store's k
    assert resolve("dypo-no-gal", overrides=["model.reference=none"]).model.reference == "none"  # no GAL, no KL
    assert resolve("dypo", overrides=["model.reference=none", "loss.gal_reference=false"]).model.reference == "none"
    assert resolve("dypo", overrides=["optim.sft_buffer=4", "optim.sft_lr=1e-5"]).optim.sft_buffer == 4
    assert resolve("dypo", overrides=["loss.rollout_correction=seq_tis", "loss.rollout_is_cap=1"]).loss.rollout_is_cap == 1


@pytest.mark.parametrize("sets, staleness", [([], 0), (["rollout.overlap=true"], 1), (["rollout.max_staleness=3"], 3),
                                             (["rollout.overlap=true", "rollout.max_staleness=2"], 2)])
def test_staleness_generalises_overlap(sets, staleness):
    assert resolve("dypo", overrides=sets).rollout.staleness == staleness


@pytest.mark.parametrize("sets, key", [
    (["run.max_steps=abc"], "run.max_steps"),
    (["run.max_steps=2.5"], "run.max_steps"),
    (["loss.alpha=high"], "loss.alpha"),
    (["model.gradient_checkpointing=maybe"], "model.gradient_checkpointing"),
    (["loss.gate=dpo"], "loss.gate"),
    (["optim.betas=0.9"], "optim.betas"),
])
def test_type_errors_name_the_key(sets, key):
    with pytest.raises(ConfigError) as e:
        resolve("dypo", overrides=sets)
    assert key in e.value.message, e.value.message


def test_yaml_type_error_names_the_key(tmp_path):
    with pytest.raises(ConfigError) as e:
        resolve(config_file=write(tmp_path, "run:\n  max_steps: abc\n"))
    assert "run.max_steps" in e.value.message


def test_yaml_11_words_for_literal_fields(tmp_path):
    """YAML reads `no` as false; a Literal field spelled that way still means its string."""
    assert resolve("dypo", overrides=["model.mixed_precision=no"]).model.mixed_precision == "no"
    assert resolve(config_file=write(tmp_path, "model:\n  mixed_precision: no\n")).model.mixed_precision == "no"
    with pytest.raises(ConfigError):
        resolve("dypo", overrides=["model.gradient_checkpointing=bf16"])


def test_typed_values_from_strings():
    cfg = resolve("dypo", overrides=["run.report_to=[]", "data.teachers=[a, b]", "optim.betas=[0.8, 0.9]",
                                     "model.gradient_checkpointing=true", "optim.lr=3e-4", "run.max_steps=7"])
    assert cfg.run.report_to == [] and cfg.data.teachers == ["a", "b"] and cfg.optim.betas == [0.8, 0.9]
    assert cfg.model.gradient_checkpointing is True and cfg.optim.lr == 3e-4 and cfg.run.max_steps == 7


# -- layering ---------------------------------------------------------------------------------------------


def test_layering_defaults_recipe_file_set(tmp_path):
    base = resolve("dypo")
    assert base.loss.alpha == 0.5 and base.optim.lr == 1e-6  # defaults (paper)
    assert resolve("grpo").loss.alpha == 1.0  # recipe > defaults
    path = write(tmp_path, "recipe: grpo\nloss:\n  alpha: 0.8\noptim:\n  lr: 2.0e-6\n")
    from_file = resolve(config_file=path)
    assert from_file.recipe == "grpo" and from_file.loss.gate == "rl"  # the file's recipe is the base
    assert from_file.loss.alpha == 0.8 and from_file.optim.lr == 2e-6  # file > recipe > defaults
    assert from_file.loss.beta_gal == 1.0  # untouched: the default
    top = resolve(config_file=path, overrides=["loss.alpha=0.3"])
    assert top.loss.alpha == 0.3 and top.optim.lr == 2e-6  # --set > file
    assert resolve(config_file=path, overrides=["loss.alpha=0.3", "loss.alpha=0.4"]).loss.alpha == 0.4  # last --set wins
    named = resolve("dypo-no-gal", config_file=path)  # an explicit recipe replaces the file's recipe key
    assert named.recipe == "dypo-no-gal" and named.loss.gate == "dypo" and named.loss.alpha == 0.8


def test_file_without_recipe_starts_from_dypo(tmp_path):
    cfg = resolve(config_file=write(tmp_path, "run:\n  max_steps: 3\n"))
    assert cfg.recipe == "dypo" and cfg.loss.gate == "dypo" and cfg.run.max_steps == 3


# -- through `dypo-train config` ----------------------------------------------------------------------------


def test_config_command_prints_the_layers(tmp_path):
    path = write(tmp_path, "recipe: grpo\nloss:\n  alpha: 0.8\n")
    result = CliRunner().invoke(app, ["config", "--config", str(path), "--set", "optim.lr=3e-6"])
    assert result.exit_code == 0, result.output
    tree = yaml.safe_load(result.stdout)
    assert tree["recipe"] == "grpo" and tree["loss"]["alpha"] == 0.8 and tree["optim"]["lr"] == 3e-6


def test_config_command_unknown_key_is_one_line():
    result = CliRunner().invoke(app, ["config", "--recipe", "dypo", "--set", "loss.alpah=0.3"])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "loss.alpah" in lines[0] and "'loss.alpha'" in lines[0]


def test_help_fields_lists_every_key():
    result = CliRunner().invoke(app, ["config", "--help-fields"])
    assert result.exit_code == 0
    for key in valid_keys():
        assert f"{key}\n" in result.stdout
