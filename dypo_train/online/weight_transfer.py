"""Pushing the trainer's weights into running vLLM servers, and asking them which policy version they hold.

Transport tested here (CPU, no NCCL): the shared-path transport. The trainer writes one policy version
once, as a safetensors file in a directory every server can read (`weight_dir/policy-v<N>/`), then asks
each server, through the routes vLLM serves under VLLM_SERVER_DEV_MODE=1, to

1. `POST /collective_rpc {"method": "reload_weights", "kwargs": {"weights_path": DIR}}`: the workers
   reload every weight in place from that directory (Hugging Face names, the checkpoint's format);
2. `POST /reset_prefix_cache`: cached prompt blocks hold attention state of the old weights;
3. `POST /update_weight_version {"new_version": "N"}`: the version `GET /weight_info` reports from now on.

The same three calls work on GPU servers and on any shared filesystem. On GPUs vLLM's own weight-transfer
engines (NCCL, CUDA IPC: `--weight-transfer-config`, `WeightTransferTrainerFactory`, the
`/init_weight_transfer_engine`, `/start_weight_update`, `/update_weights`, `/finish_weight_update` routes)
avoid the disk; they are not wired up here (nothing here has CUDA to test them).

A server that cannot be reached is skipped and reported (`push` returns which); one that answers with an
error (another architecture, a file it cannot read) raises. `versions()` reads every server's version, so
a server that missed a push (down, or restarted with its original weights) is found before its samples
are used, and pushed to again (`ServerFleet`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dypo_data.errors import BackendError

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
DEV_HINT = ("start the servers with VLLM_SERVER_DEV_MODE=1 (dypo-train serve-rollouts does), so they serve the weight "
            "routes")


def server_root(base_url: str) -> str:
    """http://host:port/v1 -> http://host:port (the dev routes are not under /v1)."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class Unreachable(Exception):
    """A server did not answer (connection refused, timed out): it may come back."""


class SharedPathTransport:
    """Writes each policy version once under `root` and has every server reload it; see the module docstring."""

    def __init__(self, root: str | os.PathLike, base_urls: Sequence[str], *, timeout_s: float = 300.0, keep: int = 2) -> None:
        self.root = Path(root).expanduser().resolve()
        self.urls = [server_root(u) for u in base_urls]
        self.timeout_s = timeout_s
        self.keep = keep

    def write(self, state_dict: Mapping[str, Any], version: int, dtype: Any) -> Path:
        """Policy version `version` as `root/policy-v<version>/model.safetensors` (written to a temporary name, then
        renamed: a server never reads half a file); older versions beyond `keep` are removed."""
        from safetensors.torch import save_file

        final = self.root / f"policy-v{version}"
        if final.is_dir():
            shutil.rmtree(final)
        tmp = self.root / f".tmp-policy-v{version}-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        tensors = {name: _tensor(t, dtype) for name, t in state_dict.items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "policy_version": str(version)})
        os.replace(tmp, final)
        self._prune(version)
        return final

    def push(self, path: Path, version: int, urls: Sequence[str] | None = None) -> list[str]:
        """Have the servers (all, or `urls`) reload `path` and report `version`; returns those that could not be reached."""
        missed = []
        for url in urls or self.urls:
            try:
                self._call(url, "/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(path)}})
                self._call(url, "/reset_prefix_cache", None)
                self._call(url, "/update_weight_version", {"new_version": str(version)})
            except Unreachable as exc:
                log.warning("server %s missed policy version %d: %s", url, version, exc)
                missed.append(url)
        return missed

    def versions(self) -> dict[str, str]:
        """The policy version (`GET /weight_info`) of every server that answers; a server that does not is left out
        (a server never pushed to reports vLLM's "default")."""
        import httpx

        out: dict[str, str] = {}
        for url in self.urls:
            try:
                reply = httpx.get(f"{url}/weight_info", timeout=10.0)
            except httpx.TransportError:
                continue
            if reply.status_code == 404:
                raise BackendError(f"server {url} has no /weight_info route", DEV_HINT)
            reply.raise_for_status()
            out[url] = str(reply.json().get("weight_version"))
        return out

    def _call(self, url: str, route: str, body: dict | None) -> None:
        import httpx

        try:
            reply = httpx.post(f"{url}{route}", json=body, timeout=self.timeout_s)
        except httpx.TransportError as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        if reply.status_code == 404:
            raise BackendError(f"server {url} has no {route} route", DEV_HINT)
        if reply.status_code >= 400:
            raise BackendError(f"server {url} refused {route}: HTTP {reply.status_code}: {reply.text[:300]}",
                               "check that every server serves the policy being trained (same architecture) and can read "
                               f"{self.root}")

    def _prune(self, version: int) -> None:
        for old in self.root.glob("policy-v*"):
            suffix = old.name.removeprefix("policy-v")
            if suffix.isdigit() and int(suffix) <= version - self.keep:
                shutil.rmtree(old, ignore_errors=True)


def _tensor(tensor: Any, dtype: Any) -> Any:
    """A detached, contiguous CPU copy in the servers' dtype (a copy: tied weights must not share storage in a file)."""
    tensor = tensor.detach()
    if tensor.is_floating_point() and tensor.dtype != dtype:
        tensor = tensor.to(dtype=dtype)
    return tensor.cpu().contiguous().clone()
