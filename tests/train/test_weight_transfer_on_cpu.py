"""dypo_train.online.weight_transfer without servers: the dev routes' root, what a policy version's file holds
(every weight, the servers' dtype, tied weights apart), older versions pruned, unreachable servers reported."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from dypo_data.errors import BackendError
from dypo_train.online.weight_transfer import WEIGHTS_FILE, SharedPathTransport, server_root


def test_server_root():
    assert server_root("http://127.0.0.1:8001/v1") == "http://127.0.0.1:8001"
    assert server_root("http://127.0.0.1:8001/v1/") == "http://127.0.0.1:8001"
    assert server_root("http://h:1") == "http://h:1"


def test_write_holds_every_weight_in_the_servers_dtype(tmp_path):
    embed = torch.randn(5, 3, dtype=torch.float32)
    state = {"model.embed_tokens.weight": embed, "lm_head.weight": embed, "model.norm.weight": torch.ones(3),
             "step": torch.tensor(3)}  # lm_head tied to the embedding: one storage, two names
    transport = SharedPathTransport(tmp_path / "w", ["http://127.0.0.1:9/v1"], keep=2)
    path = transport.write(state, 7, torch.bfloat16)
    assert path == (tmp_path / "w" / "policy-v7").resolve()
    with safe_open(str(path / WEIGHTS_FILE), framework="pt") as f:
        assert sorted(f.keys()) == sorted(state)
        assert f.metadata()["policy_version"] == "7"
        assert f.get_tensor("lm_head.weight").dtype == torch.bfloat16
        assert torch.equal(f.get_tensor("lm_head.weight"), embed.to(torch.bfloat16))
        assert f.get_tensor("step").dtype == torch.int64  # integers keep their dtype
    assert not [p for p in (tmp_path / "w").iterdir() if p.name.startswith(".tmp")]


def test_older_versions_are_pruned(tmp_path):
    transport = SharedPathTransport(tmp_path, ["http://127.0.0.1:9/v1"], keep=2)
    for v in range(4):
        transport.write({"w": torch.zeros(2)}, v, torch.float32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy-v2", "policy-v3"]


def test_unreachable_servers_are_reported_not_raised(tmp_path):
    transport = SharedPathTransport(tmp_path, ["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"], timeout_s=5)
    path = transport.write({"w": torch.zeros(2)}, 0, torch.float32)
    assert transport.reload(path, 0) == ["http://127.0.0.1:9", "http://127.0.0.1:10"]
    assert transport.versions() == {}  # only servers that answer


def test_a_server_without_the_dev_routes_is_named(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class NotFound(BaseHTTPRequestHandler):  # an OpenAI-compatible server started without VLLM_SERVER_DEV_MODE
        def do_POST(self):  # noqa: N802
            self.send_response(404)
            self.end_headers()

        do_GET = do_POST  # noqa: N815

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        transport = SharedPathTransport(tmp_path, [url], timeout_s=5)
        with pytest.raises(BackendError, match="no /collective_rpc route") as info:
            transport.push({"w": torch.zeros(2)}, 0)
        assert "VLLM_SERVER_DEV_MODE=1" in info.value.hint
    finally:
        httpd.shutdown()
