"""BackendSlot: one engine for roles that sample the same model; never two engines at once."""

from __future__ import annotations

from dypo_data.backends import GenerationRequest, ModelSpec, SamplingConfig
from dypo_data.backends.slot import BackendSlot
from dypo_data.errors import BackendError
from dypo_data.jobs.generate import engine_died


def test_same_model_under_two_names_starts_once(tiny_model_dir):
    teacher = ModelSpec(name="tiny-teacher", path=str(tiny_model_dir))
    policy = ModelSpec(name="tiny-policy", path=str(tiny_model_dir))
    with BackendSlot() as slot:
        first = slot.get("transformers", teacher, {"batch_size": 4})
        assert slot.start_seconds > 0
        again = slot.get("transformers", policy, {"batch_size": 4})
        assert again is first and slot.start_seconds == 0.0
        out = list(again.generate([GenerationRequest(key="p", messages=[{"role": "user", "content": "2+2?"}], n=2)],
                                  SamplingConfig(max_tokens=4, seed=0)))
        assert len(out[0].completions) == 2


def test_other_settings_close_the_open_backend_first(tiny_model_dirs):
    a, b = (ModelSpec(name=f"m{i}", path=str(p)) for i, p in enumerate(tiny_model_dirs[:2]))
    with BackendSlot() as slot:
        first = slot.get("transformers", a)
        second = slot.get("transformers", b)
        assert second is not first
        assert first.model is None  # closed before the second was made
        third = slot.get("transformers", b, {"batch_size": 2})  # other options: another backend
        assert third is not second and second.model is None
    assert third.model is None  # the slot closes what it holds on exit


def test_a_dead_engine_says_what_is_stored_and_that_a_rerun_resumes():
    died = engine_died(BackendError("the vLLM engine failed after 301 s in one engine step (step timeout 300 s): "
                                    "EngineDeadError: boom", "see the vLLM log above"), "smollm2", written=40, todo=96)
    assert "40 of 96 samples were done and are stored" in died.message
    assert "step timeout 300 s" in died.message
    assert died.hint.startswith("rerun the same command: it resumes")
