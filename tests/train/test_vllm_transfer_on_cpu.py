"""rollout.weight_transfer=nccl | ipc on a machine without CUDA, and what the trainer would send to the servers.

The transfers themselves (vLLM's NCCL broadcast, CUDA IPC) need GPUs and are not run here. What is checked:
the choice is refused with a one-line error before any server is contacted or started; the servers' command
line parses with vLLM's own parser into its WeightTransferConfig; the init info, the per-server init bodies
and the weight metadata are vLLM's own dataclasses and pass vLLM's own checks (the worker's parse, the NCCL
group's rank layout, the trainer engine's metadata-vs-iteration check); the fan-out client speaks vLLM's
HTTP routes (vLLM's HTTPVLLMWeightSyncClient per server) and gives each server its own rank offset.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from dypo_data.backends import ModelSpec
from dypo_data.backends.server_process import server_command
from dypo_data.errors import BackendError, ConfigError
from dypo_train.config import RolloutConfig
from dypo_train.online.devices import check_rollout_devices, check_tensor_parallel, require_cuda
from dypo_train.online.serve import rollout_server_spec, start_rollout_servers, transfer_args
from dypo_train.recipes import resolve

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
URLS = ["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"]  # nothing listens there


# -- the choice and its refusals ------------------------------------------------------------------------------


def test_the_choice_parses_and_is_validated():
    assert resolve("dypo").rollout.weight_transfer == "shared_path"
    cfg = resolve("dypo", overrides=["rollout.backend=server", f"rollout.base_urls=[{URLS[0]}]", "rollout.weight_transfer=nccl"])
    assert cfg.rollout.weight_transfer == "nccl"
    with pytest.raises(ConfigError, match="rollout.weight_transfer"):
        resolve("dypo", overrides=["rollout.backend=server", f"rollout.base_urls=[{URLS[0]}]", "rollout.weight_transfer=ncl"])
    with pytest.raises(ConfigError, match="applies to rollout.backend=server"):
        RolloutConfig(weight_transfer="ipc")
    with pytest.raises(ConfigError, match="rollout.weight_bucket_bytes"):
        RolloutConfig(weight_bucket_bytes=0)
    with pytest.raises(ConfigError, match="rollout.nccl_port"):
        RolloutConfig(backend="server", base_urls=URLS, weight_transfer="nccl", nccl_port=70000)


@no_cuda
@pytest.mark.parametrize("choice", ["nccl", "ipc"])
def test_nccl_and_ipc_are_refused_without_cuda_before_any_server(choice, tmp_path):
    with pytest.raises(ConfigError, match=f"rollout.weight_transfer={choice} needs a CUDA GPU") as info:
        check_rollout_devices(RolloutConfig(backend="server", base_urls=URLS, weight_transfer=choice))
    assert "rollout.weight_transfer=shared_path" in info.value.hint
    from dypo_train.online.fleet import ServerFleet

    spec = ModelSpec(name="policy", path=str(tmp_path))
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):  # not BackendError: no server was contacted
        ServerFleet(spec, URLS, weight_dir=tmp_path, weight_transfer=choice)
    with pytest.raises(ConfigError, match=f"--weight-transfer={choice} needs a CUDA GPU"):
        start_rollout_servers(rollout_server_spec(tmp_path, name="policy"), count=1, port=9, weight_transfer=choice)
    with pytest.raises(ConfigError, match="is not one of shared_path, nccl, ipc"):
        start_rollout_servers(rollout_server_spec(tmp_path, name="policy"), count=1, port=9, weight_transfer="ncl")
    require_cuda("shared_path")  # needs nothing


@no_cuda
def test_serve_rollouts_refuses_nccl_in_one_line(tmp_path):
    from tests.cli_run import assert_one_line_error, cli_env

    result = subprocess.run([sys.executable, "-m", "dypo_train.cli", "serve-rollouts", "--policy", str(tmp_path),
                             "--name", "policy", "--weight-transfer", "nccl", "--log-dir", str(tmp_path)],
                            capture_output=True, text=True, env=cli_env(), timeout=120)
    assert_one_line_error(result, "--weight-transfer=nccl needs a CUDA GPU")
    assert not list(tmp_path.glob("rollout-server-*.log"))  # no server was started


def test_tensor_parallel_is_checked_against_the_gpus():
    check_tensor_parallel(1, local_processes=4, gpus=0)
    check_tensor_parallel(2, local_processes=2, gpus=4)
    with pytest.raises(ConfigError, match="rollout.tensor_parallel_size=2 needs GPUs") as info:
        check_tensor_parallel(2, local_processes=1, gpus=0)
    assert "rollout.tensor_parallel_size=1" in info.value.hint
    with pytest.raises(ConfigError, match="needs 6 GPUs, and 4 are visible") as info:
        check_tensor_parallel(2, local_processes=3, gpus=4)
    assert "rollout.tensor_parallel_size=1" in info.value.hint
    with pytest.raises(ConfigError, match="rollout.tensor_parallel_size"):
        RolloutConfig(tensor_parallel_size=0)
    with pytest.raises(ConfigError, match="applies to rollout.backend=engine"):
        RolloutConfig(backend="server", base_urls=URLS, tensor_parallel_size=2)


@no_cuda
def test_engine_with_tensor_parallel_is_refused_on_cpu_before_it_starts(tmp_path):
    from dypo_train.online.engine import RolloutEngine

    with pytest.raises(ConfigError, match="rollout.tensor_parallel_size=2 needs GPUs"):
        RolloutEngine(tmp_path, tensor_parallel_size=2)  # no model there: the check comes first


# -- what the servers and the trainer's engine get, checked with vLLM's own classes ----------------------------


@pytest.mark.parametrize("choice", ["shared_path", "nccl", "ipc"])
def test_server_command_parses_with_vllms_parser(choice, tiny_model_dir):
    from vllm.config.weight_transfer import WeightTransferConfig
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cmd = server_command(rollout_server_spec(tiny_model_dir, name="policy"), port=8001) + transfer_args(choice)
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(cmd[3:])  # after python -m MODULE
    config = AsyncEngineArgs.from_cli_args(args).weight_transfer_config
    if choice == "shared_path":
        assert config is None
    else:
        assert isinstance(config, WeightTransferConfig) and config.backend == choice


def test_nccl_init_info_gives_every_worker_its_own_rank():
    from vllm.distributed.weight_transfer.nccl_common import NCCLWeightTransferInitInfo, worker_init_payload
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

    from dypo_train.online.vllm_transfer import ServerFanOut, rank_offsets, trainer_init_info

    sizes = [2, 1, 4]  # /get_world_size of three servers (tensor x pipeline x data parallel)
    info = trainer_init_info("nccl", URLS, sizes, bucket_bytes=1 << 20, nccl_port=29555)
    assert isinstance(info, NCCLTrainerInitInfo) and info.is_sender
    assert (info.master_address, info.master_port, info.world_size) == ("127.0.0.1", 29555, 8)
    assert info.packed and info.packed_buffer_size_bytes == 1 << 20
    # what vLLM's trainer engine sends for one server (rank_offset 1), then what each server of the fleet gets
    sent = worker_init_payload(NCCLWeightTransferInitInfo(
        master_address=info.master_address, master_port=info.master_port, rank_offset=1, world_size=info.world_size,
        packed=info.packed, packed_buffer_size_bytes=info.packed_buffer_size_bytes, packed_num_buffers=info.packed_num_buffers))
    fan = ServerFanOut(URLS + ["http://127.0.0.1:11"], offsets=rank_offsets(sizes)[0])
    ranks = [0]  # the trainer
    for index, size in enumerate(sizes):
        worker = NCCLWeightTransferInitInfo(**fan.server_init_info(index, sent))  # the worker's parse_init_info
        assert worker.world_size == 8 and worker.packed_buffer_size_bytes == 1 << 20
        ranks += [worker.rank_offset + r for r in range(size)]  # worker_init_process_group, one DP rank
    assert sorted(ranks) == list(range(8))


def test_ipc_init_info_is_what_the_worker_parses():
    from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo, IPCWeightTransferInitInfo

    from dypo_train.online.vllm_transfer import ServerFanOut, trainer_init_info

    info = trainer_init_info("ipc", URLS, [1, 1], bucket_bytes=1 << 20)
    assert isinstance(info, IPCTrainerInitInfo) and info.packed and info.packed_buffer_size_bytes == 1 << 20
    body = ServerFanOut(URLS).server_init_info(1, {"packed": info.packed})  # what vLLM's IPC engine sends
    assert IPCWeightTransferInitInfo(**body).packed


def test_rendezvous_address():
    from dypo_train.online.vllm_transfer import rendezvous_address

    assert rendezvous_address(["http://localhost:8001/v1", "http://127.0.0.1:8002/v1"]) == "127.0.0.1"
    assert rendezvous_address(["http://10.0.0.5:8001/v1"], "10.0.0.1") == "10.0.0.1"
    try:  # the interface that routes there, or the fix named where there is none
        assert not rendezvous_address(["http://10.0.0.5:8001/v1"]).startswith("127.")
    except ConfigError as exc:
        assert "rollout.nccl_address" in exc.hint


def test_policy_source_passes_vllms_metadata_check(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    from vllm.distributed.weight_transfer.base import WeightSource
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerWeightTransferEngine, NCCLWeightTransferUpdateInfo

    from dypo_train.online.vllm_transfer import PolicySource

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32)
    source = PolicySource(dtype=torch.bfloat16, bucket_bytes=4096)
    source.state_dict = model.state_dict()
    assert isinstance(source, WeightSource)
    meta = source.metadata()
    assert "lm_head.weight" in [m.name for m in meta] and all(m.dtype == torch.bfloat16 for m in meta)
    update = NCCLWeightTransferUpdateInfo(names=[m.name for m in meta], dtype_names=[str(m.dtype).split(".")[-1] for m in meta],
                                          shapes=[list(m.shape) for m in meta])  # as vLLM's engine builds it
    assert len(update.names) == len(model.state_dict())
    sent = list(NCCLTrainerWeightTransferEngine._checked_iter(source, meta))  # raises where iteration and metadata differ
    assert [n for n, _ in sent] == list(model.state_dict())
    assert [n for g in source.groups() for n in g] == sorted(update.names, key=update.names.index)  # vLLM's layer groups
    assert len(list(source)) == len(meta)  # re-iterable: a fresh pass each round


# -- the fan-out client over vLLM's HTTP client -------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """Answers the weight-transfer routes as a dev-mode server does (200), or 500 when told to; records the bodies."""

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.server.calls.append((self.path, json.loads(raw) if raw else None))
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def recorders():
    servers = []
    for _ in range(2):
        httpd = HTTPServer(("127.0.0.1", 0), _Recorder)
        httpd.calls, httpd.status = [], 200
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
    yield servers
    for httpd in servers:
        httpd.shutdown()


def test_fan_out_speaks_vllms_routes_with_a_rank_offset_per_server(recorders):
    from vllm.distributed.weight_transfer.base import VLLMWeightSyncClient
    from vllm.distributed.weight_transfer.nccl_common import NCCLWeightTransferInitInfo

    from dypo_train.online.vllm_transfer import ServerFanOut

    roots = [f"http://127.0.0.1:{s.server_address[1]}" for s in recorders]
    fan = ServerFanOut(roots, offsets=[1, 3], timeout_s=10)
    assert isinstance(fan, VLLMWeightSyncClient)
    fan.init_weight_transfer_engine({"master_address": "127.0.0.1", "master_port": 29555, "rank_offset": 1, "world_size": 4})
    fan.start_weight_update()
    fan.update_weights({"names": ["w"], "dtype_names": ["float32"], "shapes": [[2]]})
    fan.finish_weight_update("3")
    fan.shutdown_weight_transfer_engine()
    for server, offset in zip(recorders, [1, 3]):
        paths = [p for p, _ in server.calls]
        assert paths == ["/init_weight_transfer_engine", "/start_weight_update", "/update_weights", "/finish_weight_update",
                         "/shutdown_weight_transfer_engine"]
        bodies = dict(server.calls)
        assert NCCLWeightTransferInitInfo(**bodies["/init_weight_transfer_engine"]["init_info"]).rank_offset == offset
        assert bodies["/update_weights"] == {"update_info": {"names": ["w"], "dtype_names": ["float32"], "shapes": [[2]]}}
        assert bodies["/finish_weight_update"] == {"weight_version": "3"}


def test_fan_out_names_the_server_that_refused(recorders):
    from dypo_train.online.vllm_transfer import ServerFanOut

    recorders[1].status = 500  # e.g. started without --weight-transfer-config
    roots = [f"http://127.0.0.1:{s.server_address[1]}" for s in recorders]
    with pytest.raises(BackendError, match=f"server {roots[1]} failed a weight-transfer call") as info:
        ServerFanOut(roots, timeout_s=10).start_weight_update()
    assert "--weight-transfer" in info.value.hint
