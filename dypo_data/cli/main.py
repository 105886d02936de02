"""The `dypo-data` command: generate, verify, store and inspect reasoning traces."""

from __future__ import annotations

import typer

from dypo_data.cli import compact_cmd, cpu_cmd, eval_cmd, export_cmd, generate_cmd, import_cmd, inspect_cmd, models_cmd, synth_cmd, verify_cmd, view_cmd

app = typer.Typer(
    name="dypo-data",
    help="Generate teacher traces and policy rollout groups, verify them with math-verify, query them with SQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("generate")(generate_cmd.generate)
app.command("import")(import_cmd.import_)
app.command("verify")(verify_cmd.verify)
app.command("sql")(inspect_cmd.sql)
app.command("stats")(inspect_cmd.stats)
app.command("export")(export_cmd.export)
app.command("synth")(synth_cmd.synth)
app.command("models")(models_cmd.models)
app.command("cpu")(cpu_cmd.cpu)
app.command("eval")(eval_cmd.eval_)
app.command("eval-report")(eval_cmd.eval_report)
app.command("view")(view_cmd.view)
app.command("compact")(compact_cmd.compact)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
