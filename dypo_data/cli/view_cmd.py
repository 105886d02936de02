"""`dypo-data view`: a local, read-only web page over a store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dypo_data.cli.common import reporting, setup_logging


def view(
    store: Annotated[Path, typer.Option(help="Store directory to show (read, never written).")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on; 0 takes any free port.")] = 8765,
    host: Annotated[str, typer.Option(help="Address to listen on. The default serves this machine only; "
                                            "0.0.0.0 exposes the store to the network, deliberately.")] = "127.0.0.1",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log snapshot rebuilds and failed pages.")] = False,
) -> None:
    """Serve a web page over the store: overview, rollout groups, one prompt's traces, training runs, evals.

    Every page shows the SQL that reproduces it. The store is read into an in-memory snapshot, rebuilt
    when new shards appear; nothing is written to it.

    Examples:

      dypo-data view --store demo_store

      dypo-data view --store demo_store --port 0          # any free port

      ssh -L 8765:127.0.0.1:8765 gpu-box                 # then open http://127.0.0.1:8765/ locally
    """
    setup_logging(verbose)
    with reporting():
        from dypo_data.view.server import serve

        def ready(url: str, build_seconds: float) -> None:
            print(f"dypo view of {store} (read in {build_seconds:.1f} s) at {url}  (Ctrl-C stops it)", flush=True)

        serve(store, host=host, port=port, on_ready=ready)
