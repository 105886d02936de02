"""`rollout.weight_transfer=nccl | ipc`: the trainer pushes its weights with vLLM's own weight-transfer engines.

The transfer itself is vLLM's: `WeightTransferTrainerFactory.trainer_init` builds the trainer-side engine
(`NCCLTrainerWeightTransferEngine`: a broadcast from the trainer's GPU to every server worker's GPU;
`IPCTrainerWeightTransferEngine`: CUDA IPC handles to servers on the trainer's GPU), and the engine drives
vLLM's protocol (`init_weight_transfer_engine` once, then per update `start_weight_update`, `update_weights`,
`finish_weight_update`) through a client of the servers' HTTP dev routes. What this module adds:

- `ServerFanOut`: that client for a fleet. Every call goes to every server at once (vLLM's
  `HTTPVLLMWeightSyncClient` per server: the NCCL rendezvous and broadcast need every worker in the call
  together). For NCCL the group is the trainer (rank 0) and every worker of every server: server i's
  workers start at rank 1 + the world sizes (`/get_world_size`) of the servers before it, so the init info
  vLLM's engine sends (rank_offset 1, for one server) is given each server's own offset.
- `PolicySource`: vLLM's `WeightSource` over the trainer's `state_dict()` (HF names, lm_head included),
  streamed a bucket at a time (`weights.stream_weights`, FSDP2 shards gathered per bucket), in the servers' dtype.
- `EngineTransport`: the same interface as the shared-path transport (`push`, `repush`, `versions`, `close`),
  so the fleet does not branch on the transport. After each transfer every server resets its prefix cache and
  reports the new version (`/weight_info`), as with the shared path.

The servers must run with `--weight-transfer-config '{"backend": "nccl"}'` (or ipc; ipc over HTTP also needs
VLLM_ALLOW_INSECURE_SERIALIZATION=1 on the server) and VLLM_SERVER_DEV_MODE=1: `dypo-train serve-rollouts
--weight-transfer nccl` starts them so. The transfer group is fixed at its start: a server that restarts
cannot rejoin it (`repush` fails with the fix: restart every server, then --resume).

Not run here: this machine has no CUDA; `require_cuda` refuses the choice before any server is contacted.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import torch
from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

from dypo_data.backends.server_process import free_port
from dypo_data.errors import BackendError, ConfigError
from dypo_train.online.devices import require_cuda
from dypo_train.online.weight_transfer import ServerRoutes
from dypo_train.online.weights import stream_weights

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def rank_offsets(world_sizes: Sequence[int]) -> tuple[list[int], int]:
    """(first NCCL rank of each server's workers, group size): the trainer is rank 0, the servers follow in order."""
    offsets, next_rank = [], 1
    for size in world_sizes:
        offsets.append(next_rank)
        next_rank += size
    return offsets, next_rank


def rendezvous_address(urls: Sequence[str], configured: str = "") -> str:
    """Where the servers' workers reach the trainer: `configured`, else loopback when every server is on this
    machine, else the address of this machine's interface that routes to the first remote server."""
    if configured:
        return configured
    remote = [urlparse(u) for u in urls if urlparse(u).hostname not in LOOPBACK]
    if not remote:
        return "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # connect() on UDP sends nothing
            sock.connect((remote[0].hostname, remote[0].port or 80))
            address = sock.getsockname()[0]
    except OSError as exc:
        raise ConfigError(f"no route from this machine to the rollout server {remote[0].hostname}: {exc}",
                          "set rollout.nccl_address to an address of this machine the servers can reach") from exc
    return address


class PolicySource(WeightSource):
    """vLLM's `WeightSource` over the trainer's current `state_dict()` (set before each send)."""

    def __init__(self, *, dtype: torch.dtype, bucket_bytes: int) -> None:
        self.dtype, self.bucket_bytes = dtype, bucket_bytes
        self.state_dict: Mapping[str, torch.Tensor] = {}

    def metadata(self) -> list[ParamMeta]:
        return [ParamMeta(name, self.dtype if t.is_floating_point() else t.dtype, tuple(t.shape))
                for name, t in self.state_dict.items()]

    def __iter__(self):
        return stream_weights(self.state_dict, dtype=self.dtype, bucket_bytes=self.bucket_bytes)


class ServerFanOut:
    """vLLM's `VLLMWeightSyncClient` protocol over every server of the fleet (see the module docstring)."""

    def __init__(self, roots: Sequence[str], *, offsets: Sequence[int] | None = None, timeout_s: float = 300.0) -> None:
        from vllm.distributed.weight_transfer import HTTPVLLMWeightSyncClient

        self.roots = list(roots)
        self.offsets = list(offsets) if offsets is not None else None
        self.clients = [HTTPVLLMWeightSyncClient(root, timeout=timeout_s) for root in self.roots]

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self._each(lambda i, c: c.init_weight_transfer_engine(self.server_init_info(i, init_info)))

    def server_init_info(self, index: int, init_info: dict[str, Any]) -> dict[str, Any]:
        """The init info server `index` gets: NCCL's rank_offset moved to where its workers start in the group."""
        if "rank_offset" not in init_info or self.offsets is None:
            return dict(init_info)
        return {**init_info, "rank_offset": init_info["rank_offset"] - 1 + self.offsets[index]}

    def start_weight_update(self) -> None:
        self._each(lambda i, c: c.start_weight_update())

    def update_weights(self, update_info: Any) -> None:
        self._each(lambda i, c: c.update_weights(update_info))

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._each(lambda i, c: c.finish_weight_update(weight_version))

    def shutdown_weight_transfer_engine(self) -> None:
        """The servers leave the transfer group (a later run, or a resumed one, starts a new group)."""
        self._each(lambda i, c: c.shutdown_weight_transfer_engine())

    def _each(self, call: Callable[[int, Any], None]) -> None:
        with ThreadPoolExecutor(max_workers=len(self.clients)) as pool:
            futures = [pool.submit(call, i, c) for i, c in enumerate(self.clients)]
        for root, future in zip(self.roots, futures):
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - requests' errors, named with the server
                raise BackendError(f"server {root} failed a weight-transfer call: {type(exc).__name__}: {exc}",
                                   "start the servers with the run's rollout.weight_transfer (dypo-train serve-rollouts "
                                   "--weight-transfer ...), which sets --weight-transfer-config and the dev routes") from exc


class EngineTransport:
    """Weights to the servers through vLLM's trainer-side nccl or ipc engine; see the module docstring."""

    def __init__(self, base_urls: Sequence[str], *, backend: str, dtype: torch.dtype, bucket_bytes: int,
                 nccl_address: str = "", nccl_port: int = 0, timeout_s: float = 300.0) -> None:
        require_cuda(backend)
        self.routes = ServerRoutes(base_urls, timeout_s=timeout_s)
        self.urls = self.routes.urls
        self.backend, self.nccl_address, self.nccl_port = backend, nccl_address, nccl_port
        self.source = PolicySource(dtype=dtype, bucket_bytes=bucket_bytes)
        self.engine: Any = None  # vLLM's trainer engine, built at the first push (the group needs every server up)

    def push(self, state_dict: Mapping[str, torch.Tensor], version: int) -> list[str]:
        """Send `state_dict` to every server as policy version `version`; returns [] (every server must be up: the
        transfer is one collective over all of them)."""
        down = sorted(set(self.urls) - set(self.routes.versions()))
        if down:
            raise BackendError(f"rollout servers {', '.join(down)} do not answer, and rollout.weight_transfer="
                               f"{self.backend} sends to every server at once",
                               "start them again (dypo-train serve-rollouts), then continue with dypo-train run --resume RUN_DIR")
        self.source.state_dict = state_dict
        if self.engine is None:
            self.engine = self._trainer_init()
        self.engine.send_weights()
        self.routes.finish(version, self.urls)
        return []

    def repush(self, urls: Sequence[str], version: int) -> None:
        raise BackendError(f"servers {', '.join(urls)} hold another policy version than {version}; with "
                           f"rollout.weight_transfer={self.backend} a restarted server cannot rejoin the transfer group",
                           "restart every server (dypo-train serve-rollouts), then continue with dypo-train run --resume RUN_DIR")

    def versions(self) -> dict[str, str]:
        return self.routes.versions()

    def close(self) -> None:
        """Both sides leave the transfer group; servers that are gone are only logged."""
        if self.engine is None:
            return
        try:
            self.engine.client.shutdown_weight_transfer_engine()
        except BackendError as exc:
            log.warning("weight transfer: %s", exc)
        finally:
            self.engine.shutdown()

    def client(self, world_sizes: Sequence[int]) -> ServerFanOut:
        offsets = rank_offsets(world_sizes)[0] if self.backend == "nccl" else None
        return ServerFanOut(self.urls, offsets=offsets, timeout_s=self.routes.timeout_s)

    def _trainer_init(self) -> Any:
        from vllm.distributed.weight_transfer import WeightTransferTrainerFactory

        sizes = self.routes.world_sizes()
        log.info("weight transfer: vLLM %s engine to %d servers (%d workers)", self.backend, len(self.urls), sum(sizes))
        info = trainer_init_info(self.backend, self.urls, sizes, bucket_bytes=self.source.bucket_bytes,
                                 nccl_address=self.nccl_address, nccl_port=self.nccl_port)
        return WeightTransferTrainerFactory.trainer_init(info, client=self.client(sizes), source=self.source)


def trainer_init_info(backend: str, urls: Sequence[str], world_sizes: Sequence[int], *, bucket_bytes: int,
                      nccl_address: str = "", nccl_port: int = 0) -> Any:
    """vLLM's trainer init info (`NCCLTrainerInitInfo`, `IPCTrainerInitInfo`) for servers at `urls` with these world
    sizes: the trainer sends (rank 0), packed in buffers of `bucket_bytes`; the NCCL group spans every worker."""
    from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

    if backend == "ipc":
        return IPCTrainerInitInfo(rank=0, packed=True, packed_buffer_size_bytes=bucket_bytes)
    return NCCLTrainerInitInfo(rank=0, master_address=rendezvous_address(urls, nccl_address),
                               master_port=nccl_port or free_port("0.0.0.0"), world_size=rank_offsets(world_sizes)[1],
                               packed=True, packed_buffer_size_bytes=bucket_bytes)
