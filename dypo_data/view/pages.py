"""What each page shows: its checked parameters, the named queries it runs, the data for its template.

A page function takes the store's `Snapshot` and the request's `Query` and returns a `Page`: the
template to render, its context, and every `QueryRun` (so the page can show the SQL that
reproduces it). Nothing here knows about HTTP; `app.py` maps a `PageError` to its status.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from dypo_data.store import view_queries as q
from dypo_data.view import params
from dypo_data.view.charts import PALETTE, Series, line_chart
from dypo_data.view.highlight import answer_segments
from dypo_data.view.params import PageError, Query
from dypo_data.view.snapshot import QueryRun, Snapshot

TIERS = ("easy", "mid", "hard", "unscored")
# Sections of the runs page: metric-name prefix -> heading, in the order shown.
METRIC_SECTIONS = (
    ("tier/", "Gate: offline-data ratio and tiers"), ("route/", "Routes"), ("reward/", "Reward"),
    ("policy/", "Policy"), ("grad/", "Gradient"), ("loss/", "Losses"), ("time/", "Time per phase (s)"),
    ("eval/", "Evaluation during training"), ("", "Other"),
)
MAX_RUNS = len(PALETTE)
# Charts shown first within their section (the DYPO gate's headline curves), the rest by name.
LEADING_CHARTS = ("tier/offline_ratio", "tier/hard", "tier/mid", "tier/easy", "reward/mean", "policy/entropy",
                  "grad/norm", "loss/total")


@dataclass
class Page:
    template: str
    context: dict[str, Any]
    queries: list[QueryRun] = field(default_factory=list)


def overview(snap: Snapshot, query: Query) -> Page:
    query.check_known(set())
    runs = [snap.run(nq) for nq in (q.STORE_COUNTS, q.MODELS, q.SOURCES, q.TIERS, q.STATUSES, q.RUNS)]
    counts, models, sources, tiers, statuses, train_runs = runs
    return Page("overview.html", {
        "counts": counts.first, "models": models, "sources": sources, "tiers": tiers, "statuses": statuses,
        "runs": train_runs,
    }, runs)


def groups(snap: Snapshot, query: Query) -> Page:
    query.check_known({"tier", "model", "policy_version", "source", "status", "hard_without_teacher", "q", "page", "per_page"})
    options = snap.run(q.GROUP_CHOICES)
    found = options.first or {}
    filters = {
        "tier": params.choice(query, "tier", TIERS),
        "model": params.choice(query, "model", found.get("models") or []),
        "policy_version": params.choice(query, "policy_version", found.get("policy_versions") or []),
        "source": params.choice(query, "source", found.get("sources") or []),
        "status": params.choice(query, "status", found.get("statuses") or []),
        "hard_without_teacher": params.flag(query, "hard_without_teacher"),
        "q": params.text(query, "q"),
    }
    at = params.paging(query)
    rows = snap.run(q.GROUP_PAGE, {**filters, "limit": at.per_page, "offset": at.offset})
    matching = rows.first["matching"] if rows.rows else _count_when_past_end(snap, q.GROUP_PAGE, filters, at.page)
    params.check_page_exists(at, matching)
    return Page("groups.html", {
        "rows": rows.rows, "filters": filters, "choices": {**found, "tiers": TIERS},
        "paging": params.page_links(filters, at, matching),
    }, [options, rows])


def _count_when_past_end(snap: Snapshot, query: q.NamedQuery, filters: dict[str, Any], page: int) -> int:
    """Rows matching the filters, when the requested page came back empty (0 rows, or past the end)."""
    if page == 1:
        return 0
    first = snap.run(query, {**filters, "limit": 1, "offset": 0})
    return first.first["matching"] if first.rows else 0


def prompt(snap: Snapshot, query: Query, prompt_id: str) -> Page:
    query.check_known(set())
    values = {"prompt_id": params.stable_id(prompt_id, "prompt")}
    head = snap.run(q.PROMPT, values)
    if head.first is None:
        raise PageError(404, f"prompt {prompt_id} is not in this store; find one on the Groups page")
    groups_run, traces, training, evals = (snap.run(nq, values) for nq in
                                           (q.PROMPT_GROUPS, q.PROMPT_TRACES, q.PROMPT_TRAINING, q.EVAL_SAMPLES_OF_PROMPT))
    rollouts: dict[str, list[dict]] = defaultdict(list)
    teachers = []
    for row in traces.rows:
        row["segments"] = answer_segments(row["completion"], row["extracted_answer"])
        (rollouts[row["group_id"]] if row["role"] == "policy" else teachers).append(row)
    for row in evals.rows:
        row["segments"] = answer_segments(row["completion"], row["extracted_answer"])
    group_cards = [{"group": g, "rollouts": rollouts.get(g["group_id"], [])} for g in groups_run.rows]
    return Page("prompt.html", {
        "prompt": head.first, "groups": group_cards, "teachers": teachers, "training": training.rows,
        "evals": evals.rows,
    }, [head, groups_run, traces, training, evals])


def runs(snap: Snapshot, query: Query) -> Page:
    query.check_known({"run"})
    listing = snap.run(q.RUNS)
    names = [r["run_id"] for r in listing.rows]
    chosen = params.choices(query, "run", names) or names[:MAX_RUNS]
    if len(chosen) > MAX_RUNS:
        raise PageError(400, f"{len(chosen)} runs asked for; overlay at most {MAX_RUNS} at once")
    metrics = snap.run(q.RUN_METRICS, {"runs": chosen})
    skips = snap.run(q.SKIPS_PER_STEP, {"runs": chosen})
    colours = {run: PALETTE[i] for i, run in enumerate(chosen)}
    return Page("runs.html", {
        "listing": listing.rows, "chosen": chosen, "colours": colours,
        "sections": _chart_sections(metrics.rows, colours), "skips": _skip_table(skips.rows),
    }, [listing, metrics, skips])


def _chart_sections(rows: list[dict], colours: dict[str, str]) -> list[tuple[str, list[str]]]:
    """[(heading, [svg, ...])]: one chart per metric name, its runs overlaid."""
    points: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:  # ordered by name, run, step
        points[row["name"]][row["run_id"]].append((row["step"], row["value"]))
    sections: dict[str, list[str]] = defaultdict(list)
    order = sorted(points, key=lambda n: (LEADING_CHARTS.index(n) if n in LEADING_CHARTS else len(LEADING_CHARTS), n))
    for name in order:
        per_run = points[name]
        heading = next(h for prefix, h in METRIC_SECTIONS if name.startswith(prefix))
        series = [Series(run, colours[run], pts) for run, pts in per_run.items()]
        sections[heading].append(line_chart(name, series))
    return [(h, sections[h]) for _, h in METRIC_SECTIONS if sections.get(h)]


def _skip_table(rows: list[dict]) -> dict[str, Any]:
    """Skipped prompts as a (run, step) x reason table."""
    reasons = sorted({r["reason"] for r in rows})
    table: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)
    for r in rows:
        table[(r["run_id"], r["step"])][r["reason"]] = r["prompts"]
    return {"reasons": reasons, "rows": [{"run_id": k[0], "step": k[1], "counts": v} for k, v in table.items()]}


def skipped(snap: Snapshot, query: Query, run_id: str) -> Page:
    query.check_known({"step", "reason", "page", "per_page"})
    listing = snap.run(q.RUNS)
    run = params.run_name(run_id)
    known = {r["run_id"]: r for r in listing.rows}
    if run not in known:
        raise PageError(404, f"run {run!r} is not in this store; pick one on the Runs page")
    reasons = snap.run(q.SKIP_REASONS)
    filters = {
        "run": run,
        "step": params.integer(query, "step", low=0, high=max(known[run]["last_step"], 0)),
        "reason": params.choice(query, "reason", (reasons.first or {}).get("reasons") or []),
    }
    at = params.paging(query)
    rows = snap.run(q.SKIPPED_PROMPTS, {**filters, "limit": at.per_page, "offset": at.offset})
    matching = rows.first["matching"] if rows.rows else _count_when_past_end(snap, q.SKIPPED_PROMPTS, filters, at.page)
    params.check_page_exists(at, matching)
    shown = {"step": filters["step"], "reason": filters["reason"]}
    return Page("skipped.html", {
        "run": run, "rows": rows.rows, "filters": shown, "reasons": (reasons.first or {}).get("reasons") or [],
        "paging": params.page_links(shown, at, matching),
    }, [listing, reasons, rows])


def evaluation(snap: Snapshot, query: Query) -> Page:
    query.check_known({"model", "benchmark"})
    options = snap.run(q.EVAL_CHOICES)
    found = options.first or {}
    filters = {"model": params.choice(query, "model", found.get("models") or []),
               "benchmark": params.choice(query, "benchmark", found.get("benchmarks") or [])}
    results = snap.run(q.EVAL_TABLE, filters)
    return Page("eval.html", {"filters": filters, "choices": found, "table": _eval_pivot(results.rows)},
                [options, results])


def _eval_pivot(rows: list[dict]) -> dict[str, Any]:
    """One row per (benchmark, model, version), one column per metric."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    table: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r["benchmark"], r["model"], r["policy_version"])
        entry = table.setdefault(key, {"benchmark": key[0], "model": key[1], "policy_version": key[2],
                                       "n_problems": r["n_problems"], "k": r["k"], "cells": {}})
        entry["cells"][r["metric"]] = r
    return {"metrics": metrics, "rows": list(table.values())}
