"""Start and stop a local vLLM OpenAI-compatible server (demos, tests, several teachers on one host).

    with LocalServer(ModelSpec(name="teacher", path=DIR)) as server:
        backend = OpenAIBackend(spec, base_urls=[server.base_url])

`vllm serve` does not work with the CPU build (its console script looks for a distribution named
`vllm`), so the server runs as `python -m vllm.entrypoints.openai.api_server`. On CPU the command
switches chunked prefill off (seeded requests crash with it), sizes the KV cache from the spec and
takes the CPU plan of `cpu.py` (dtype, bounded steps; OpenMP binding and step timeout in its env).
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dypo_data.backends.base import ModelSpec
from dypo_data.backends.base import check_model_dir
from dypo_data.backends.vllm_engine import LOGPROBS_MODE, plan_for, vllm_is_cpu_build
from dypo_data.errors import BackendError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def server_command(model: ModelSpec, *, host: str = "127.0.0.1", port: int = 8000, cpu: bool | None = None) -> list[str]:
    """The command line of a vLLM server for `model`, serving it under `model.name`."""
    cpu = vllm_is_cpu_build() if cpu is None else cpu
    plan = plan_for(model) if cpu else None
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model.path,
        "--served-model-name", model.name,
        "--host", host,
        "--port", str(port),
        "--dtype", plan.dtype if plan else model.dtype,
        "--seed", "0",
        "--logprobs-mode", LOGPROBS_MODE[model.logprobs_mode],
        "--tensor-parallel-size", str(model.tensor_parallel_size),
        "--disable-log-stats",
    ]  # fmt: skip
    if model.enforce_eager:
        cmd.append("--enforce-eager")
    if model.max_model_len is not None:
        cmd += ["--max-model-len", str(model.max_model_len)]
    if model.max_num_seqs is not None:
        cmd += ["--max-num-seqs", str(model.max_num_seqs)]
    if model.chat_template is not None:
        cmd += ["--chat-template", model.chat_template]
    if plan:
        budget = max(model.max_num_batched_tokens or 0, plan.step_tokens)
        cmd += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(budget)]
    else:
        cmd += ["--gpu-memory-utilization", str(model.gpu_memory_utilization)]
        if model.data_parallel_size > 1:
            cmd += ["--data-parallel-size", str(model.data_parallel_size)]
        if model.max_num_batched_tokens is not None:
            cmd += ["--max-num-batched-tokens", str(model.max_num_batched_tokens)]
    return cmd


class LocalServer:
    """A vLLM server in a child process, ready once `/health` answers; stopped on exit."""

    def __init__(
        self,
        model: ModelSpec,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: str | os.PathLike | None = None,
        startup_timeout_s: float = 300.0,
        env: dict[str, str] | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
    ) -> None:
        """`extra_args`: more `vllm.entrypoints.openai.api_server` arguments, after those of `server_command`."""
        check_model_dir(model.path)
        self.model = model
        self.host = host
        self.port = port or free_port(host)
        self.log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"dypo-vllm-server-{self.port}.log"
        self.startup_timeout_s = startup_timeout_s
        self.env = dict(env or {})
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> LocalServer:
        cpu = vllm_is_cpu_build()
        env = {**os.environ, **self.env}
        if cpu and self.model.kv_cache_gib is not None:
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, math.ceil(self.model.kv_cache_gib))))
        if cpu:
            for key, value in plan_for(self.model).environment().items():
                env.setdefault(key, value)
        cmd = server_command(self.model, host=self.host, port=self.port, cpu=cpu) + self.extra_args
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BackendError(
                    f"vLLM server for {self.model.path} exited with code {self.process.returncode}: {self.log_tail()}",
                    f"see the full log in {self.log_path}",
                )
            try:
                if httpx.get(f"http://{self.host}:{self.port}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise BackendError(
            f"vLLM server for {self.model.path} not ready after {self.startup_timeout_s:.0f} s",
            f"see {self.log_path}; pass enforce_eager=True to start faster",
        )

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the server's process group (it shuts its engine down), SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
