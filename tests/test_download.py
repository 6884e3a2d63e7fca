"""Pretrained feature weights: downloaded on first use into torch's hub cache with
their hash checked, and never requested offline — which is how the test suite runs.

Every file is served here, by a server on 127.0.0.1 that counts its requests.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from blocks.builtin import vgg
from blocks.registry import ParamFileNotFound
from engine import hub


class Server:
    """Serves ``files`` (name → bytes) and counts the requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in hub.OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def named(body: bytes, stem: str = "weights") -> str:
    """A torchvision-style name: the first 8 hex digits of the sha256 in it."""
    return f"{stem}-{hashlib.sha256(body).hexdigest()[:8]}.pth"


def test_the_suite_runs_offline_and_makes_no_request(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert os.environ["LOOM_OFFLINE"] == "1" and hub.offline()

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail("a download was attempted in offline mode")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(ParamFileNotFound) as info:
        vgg.VGG19Features(["conv1_1"]).load_weights("imagenet")
    text = str(info.value)
    assert str(cache / vgg.IMAGENET_FILE) in text and vgg.IMAGENET_URL in text
    assert "LOOM_OFFLINE" in text


def test_download_with_the_right_hash_lands_in_the_cache(
    server: Server, cache: Path, online: None
) -> None:
    body = os.urandom(3 * hub.CHUNK + 17)
    name = named(body)
    server.files[name] = body
    path = hub.cached(f"{server.url}/{name}", progress=False)
    assert path == cache / name and path.read_bytes() == body
    assert hub.cached(f"{server.url}/{name}") == path  # from the cache now
    assert len(server.requests) == 1


def test_a_wrong_hash_is_refused_and_nothing_is_kept(
    server: Server, cache: Path, online: None
) -> None:
    name = named(b"the published file")
    server.files[name] = b"something else"
    with pytest.raises(hub.DownloadError, match="not the published"):
        hub.cached(f"{server.url}/{name}", progress=False)
    assert not cache.exists() or not any(cache.iterdir())


def test_offline_switches_never_request(
    server: Server, cache: Path, online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = named(b"x")
    server.files[name] = b"x"
    for variable in hub.OFFLINE_VARIABLES:
        monkeypatch.setenv(variable, "1")
        with pytest.raises(hub.Offline, match=variable):
            hub.cached(f"{server.url}/{name}")
        monkeypatch.delenv(variable)
    assert server.requests == []
    with pytest.raises(hub.DownloadError, match="cannot download"):
        hub.cached(f"{server.url}/{named(b'absent')}", progress=False)  # a 404


def test_vgg19_imagenet_weights_download_on_first_use(
    server: Server, cache: Path, online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    trunk = vgg.VGG19Features(["relu1_1"])
    state = {k: torch.randn(v.shape) for k, v in trunk.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({f"features.{k.split('.', 1)[1]}": v for k, v in state.items()}, buffer)
    body = buffer.getvalue()
    name = named(body, "vgg19")
    server.files[name] = body
    monkeypatch.setattr(vgg, "IMAGENET_FILE", name)
    monkeypatch.setattr(vgg, "IMAGENET_URL", f"{server.url}/{name}")
    trunk.load_weights("imagenet")
    assert (cache / name).is_file()
    torch.testing.assert_close(trunk.features[0].weight, state["features.0.weight"])


def test_an_empty_or_unsafe_vgg_file_gets_looms_refusal(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="damaged: the file is empty") as info:
        vgg.VGG19Features(["conv1_1"]).load_weights(str(empty))
    assert "weights_only" not in str(info.value)
