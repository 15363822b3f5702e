"""Network failures come in seconds, and weights are cached under their whole URL (issue 34).
Everything here is local: loopback servers the tests start, and a resolver replaced by one that
hangs; nothing reaches the internet."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from nevisbench.backbones.weights import cached_path, load_weights
from nevisbench.errors import ConfigError
from nevisbench.run.learner.backbone import build_backbone


@pytest.fixture
def silent_server():
    """A loopback socket that accepts connections (the kernel's backlog) and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def _within(seconds: float, call) -> BaseException | None:
    """Run `call` in a thread; fail unless it ends within `seconds`; return what it raised."""
    raised: list[BaseException | None] = [None]

    def work():
        try:
            call()
        except BaseException as exc:
            raised[0] = exc

    thread = threading.Thread(target=work, daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    assert time.monotonic() - start < seconds
    return raised[0]


def test_weights_from_a_server_that_never_answers_fail_in_seconds(silent_server, monkeypatch):
    monkeypatch.setenv("NEVISBENCH_NETWORK_TIMEOUT", "1")
    raised = _within(10, lambda: load_weights("resnet18", f"{silent_server}/w.pt"))
    assert isinstance(raised, ConfigError) and "Cannot download backbone weights for resnet18" in str(raised)


def test_a_resolver_that_hangs_fails_in_seconds_and_the_cache_is_asked_first(monkeypatch):
    """No network: the system resolver waits for every configured server in turn (two minutes)."""
    def hanging(*args, **kwargs):
        time.sleep(20)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    monkeypatch.setenv("NEVISBENCH_NETWORK_TIMEOUT", "1")
    url = "http://weights.example/nets/w.pt"
    raised = _within(10, lambda: load_weights("resnet18", url))
    assert isinstance(raised, ConfigError) and "Offline?" in str(raised) and str(cached_path(url)) in str(raised)
    target = cached_path(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"conv1.weight": torch.ones(1)}, target)  # put there by hand, as the message says
    assert torch.equal(load_weights("resnet18", url)["conv1.weight"], torch.ones(1))  # no network asked


@pytest.mark.slow
def test_data_prepare_download_fails_in_seconds_without_an_answer(silent_server, tmp_path):
    start = time.monotonic()
    proc = run_cli("data", "prepare", "mnist", "--download", "--mirror", silent_server, "--root", str(tmp_path),
                   env_extra={"NEVISBENCH_NETWORK_TIMEOUT": "1"}, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "unreachable" in out and "timed out" in out and "Traceback" not in out, out
    assert time.monotonic() - start < 45  # imports included; it waited 60 s per file before


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "served"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_two_urls_with_the_same_file_name_are_two_cache_entries(served):
    """`.../a/w.pt` then `.../b/w.pt` (another architecture) silently reused the first file."""
    folder, base = served
    for sub, width in (("a", 1.0), ("b", 2.0)):
        (folder / sub).mkdir(parents=True)
        model, _ = build_backbone("resnet18", "none", image_size=32)
        state = {k: torch.full_like(v, width) if k == "conv1.weight" else v for k, v in model.state_dict().items()}
        torch.save(state, folder / sub / "w.pt")
    first, _ = build_backbone("resnet18", f"{base}/a/w.pt", image_size=32)
    second, _ = build_backbone("resnet18", f"{base}/b/w.pt", image_size=32)
    assert first.conv1.weight.detach().flatten()[0].item() == 1.0 and second.conv1.weight.detach().flatten()[0].item() == 2.0
    assert cached_path(f"{base}/a/w.pt") != cached_path(f"{base}/b/w.pt")
    assert cached_path(f"{base}/a/w.pt").is_file() and cached_path(f"{base}/b/w.pt").is_file()


def test_a_download_that_does_not_match_the_hash_in_its_name_is_refused(served):
    folder, base = served
    folder.mkdir(parents=True)
    model, _ = build_backbone("resnet18", "none", image_size=32)
    torch.save(model.state_dict(), folder / "raw.pth")
    digest = hashlib.sha256((folder / "raw.pth").read_bytes()).hexdigest()
    (folder / f"good-{digest[:8]}.pth").write_bytes((folder / "raw.pth").read_bytes())
    (folder / "bad-0123abcd.pth").write_bytes((folder / "raw.pth").read_bytes())
    assert load_weights("resnet18", f"{base}/good-{digest[:8]}.pth")
    with pytest.raises(ConfigError, match="the file name says 0123abcd"):
        load_weights("resnet18", f"{base}/bad-0123abcd.pth")
    bad = cached_path(f"{base}/bad-0123abcd.pth")
    assert not bad.exists() and not list(bad.parent.glob(".*part"))
    assert Path(cached_path("http://x/y/resnet18-f37072fd.pth", official=True)).parent.name == "checkpoints"
