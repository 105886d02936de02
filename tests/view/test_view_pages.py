"""Every page over the test store: what it shows, checked against the factory's ground truth."""

from __future__ import annotations

import html
import re

from markupsafe import escape

from view_store_factory import BENCHMARK, EVAL_VERSIONS, HOSTILE_MARKUP, RUNS


def _prompt_links(text: str) -> list[str]:
    return re.findall(r'href="/prompt/([0-9a-f]{16})"', text)


def test_overview_counts_match_the_store(client, view_store):
    page = client.get("/")
    assert page.status_code == 200
    text = page.text
    tiers = list(view_store.tiers.values())
    # the tier table: groups, easy, mid, hard, unscored of the one policy version
    row = re.search(r"<td>step-0</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>", text)
    assert row and [int(x) for x in row.groups()] == [len(tiers), *(tiers.count(t) for t in ("easy", "mid", "hard", "unscored"))]
    for run in RUNS:
        assert f'href="/runs?run={run}"' in text
    for status in ("ok", "no_answer", "timeout", "parse_error", "error"):
        assert f"<td>{status}</td>" in text
    assert 'id="sql"' in text and "FROM groups" in text


def test_groups_lists_every_group_once_and_filters_by_tier(client, view_store):
    text = client.get("/groups").text
    assert sorted(_prompt_links(text)) == sorted({t["prompt_id"] for t in view_store.traces if t["role"] == "policy"})
    hard = client.get("/groups", params={"tier": "hard"}).text
    hard_prompts = {view_store.group_traces(g)[0]["prompt_id"] for g in view_store.groups_of("hard")}
    assert set(_prompt_links(hard)) == hard_prompts
    assert "g.tier = &#39;hard&#39;" in hard  # the displayed SQL carries the filter


def test_groups_hard_without_a_verified_teacher_trace(client, view_store):
    text = client.get("/groups", params={"hard_without_teacher": "1"}).text
    pool_prompts = {t["prompt_id"] for t in view_store.traces if t["trace_id"] in view_store.teacher_pool}
    expected = {view_store.group_traces(g)[0]["prompt_id"] for g in view_store.groups_of("hard")} - pool_prompts
    assert expected and set(_prompt_links(text)) == expected


def test_groups_status_source_and_text_search(client, view_store):
    timeout = client.get("/groups", params={"status": "timeout"}).text
    assert len(_prompt_links(timeout)) == 1  # the factory puts one timeout rollout in the first mid group
    math = set(_prompt_links(client.get("/groups", params={"source": "math"}).text))
    assert math == {p["prompt_id"] for p in view_store.prompts if p["source"] == "math"}
    muffins = set(_prompt_links(client.get("/groups", params={"q": "MUFFINS"}).text))
    assert muffins == {p["prompt_id"] for p in view_store.prompts if "muffins" in p["problem"].lower()} and muffins
    nothing = client.get("/groups", params={"q": "' OR 1=1 --"})
    assert nothing.status_code == 200 and _prompt_links(nothing.text) == [] and "no group matches" in nothing.text


def test_groups_paginate_in_sql(client):
    first = client.get("/groups", params={"per_page": 5}).text
    second = client.get("/groups", params={"per_page": 5, "page": 2}).text
    third = client.get("/groups", params={"per_page": 5, "page": 3}).text
    pages = [_prompt_links(t) for t in (first, second, third)]
    assert [len(p) for p in pages] == [5, 5, 2]
    assert len({pid for p in pages for pid in p}) == 12
    assert "LIMIT 5 OFFSET 5" in second and 'rel="next"' in first and 'rel="next"' not in third
    assert "rows 6–10 of 12" in second
    assert client.get("/groups", params={"per_page": 5, "page": 4}).status_code == 404


def test_prompt_page_shows_rollouts_teachers_training_and_evals(client, view_store):
    prompt = view_store.prompts[0]
    pid = prompt["prompt_id"]
    text = client.get(f"/prompt/{pid}").text
    assert html.escape(prompt["problem"], quote=False) in text
    rollouts = [t for t in view_store.traces if t["prompt_id"] == pid and t["role"] == "policy"]
    assert text.count('<article class="trace">') == len(rollouts) == 4
    teachers = [t for t in view_store.traces if t["prompt_id"] == pid and t["role"] == "teacher"]
    assert text.count('<article class="trace teacher">') == len(teachers)
    evals = [t for t in view_store.traces if t["prompt_id"] == pid and t["role"] == "eval"]
    assert text.count('<article class="trace eval">') == len(evals) == 2 * len(EVAL_VERSIONS)
    # every training step of both runs saw every prompt; each row names its route
    assert len(re.findall(r'<span class="route">', text)) == 2 * 8
    for t in rollouts:
        verdict = view_store.latest.get(t["trace_id"])
        if verdict and verdict["extracted_answer"]:
            assert f'<mark class="answer">{html.escape(verdict["extracted_answer"])}</mark>' in text


def test_hard_prompt_shows_the_teacher_trace_it_trained_on(client, view_store):
    gid = next(g for g in view_store.groups_of("hard")
               if any(t["prompt_id"] == view_store.group_traces(g)[0]["prompt_id"] and t["trace_id"] in view_store.teacher_pool
                      for t in view_store.traces))
    pid = view_store.group_traces(gid)[0]["prompt_id"]
    text = client.get(f"/prompt/{pid}").text
    assert '<span class="route">sft</span>' in text
    trained = re.findall(r"<code>([0-9a-f]{16})</code></td>", text)
    assert trained and set(trained) <= view_store.teacher_pool


def test_completions_are_escaped_text(client, view_store):
    text = client.get(f"/prompt/{view_store.prompts[0]['prompt_id']}").text
    assert str(escape(HOSTILE_MARKUP)) in text
    assert "<script>window" not in text and "<img" not in text
    assert "script-src 'self'" in client.get("/").headers["content-security-policy"]


def test_runs_overlay_charts_and_skips(client):
    text = client.get("/runs").text
    assert text.count('<svg class="chart"') >= 10
    for name in ("tier/offline_ratio", "policy/entropy", "grad/norm", "loss/sft", "time/generate", f"eval/{BENCHMARK}/avg@4"):
        assert f'aria-label="{name}"' in text
    chart = re.search(r'<svg class="chart".*?aria-label="reward/mean".*?</svg>', text).group(0)
    assert chart.count("<polyline") == 2  # both runs overlaid
    one = client.get("/runs", params={"run": "dypo-b"}).text
    chart = re.search(r'<svg class="chart".*?aria-label="reward/mean".*?</svg>', one).group(0)
    assert chart.count("<polyline") == 1
    for reason in ("easy", "no_teacher", "unscored"):
        assert f"<th>{reason}</th>" in text
    assert "/runs/dypo-a/skipped?step=1&amp;reason=easy" in text


def test_skipped_prompts_of_one_step(client, view_store):
    text = client.get("/runs/dypo-a/skipped", params={"step": 2, "reason": "easy"}).text
    easy = {view_store.group_traces(g)[0]["prompt_id"] for g in view_store.groups_of("easy")}
    assert set(_prompt_links(text)) == easy
    assert "s.route = &#39;skip:&#39; || &#39;easy&#39;" in text


def test_eval_table_per_model_and_checkpoint(client):
    text = client.get("/eval").text
    for version in EVAL_VERSIONS:
        assert f"<td>{version}</td>" in text
    for metric in ("avg@2", "pass@1", "maj@2"):
        assert f"<th>{metric}</th>" in text
    assert "0.700 <small>[0.600, 0.800]</small>" in text  # avg@2 of checkpoint 8
    assert client.get("/eval", params={"benchmark": BENCHMARK}).status_code == 200


def test_an_empty_store_renders_every_page(tmp_path):
    from starlette.testclient import TestClient

    from dypo_data.view.app import create_app

    client = TestClient(create_app(tmp_path))
    for url, empty in (("/", "no traces yet"), ("/groups", "no group matches"), ("/runs", "no training runs"),
                       ("/eval", "no evaluation results")):
        page = client.get(url)
        assert page.status_code == 200 and empty in page.text, url
