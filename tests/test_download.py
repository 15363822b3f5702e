"""`--download` against a loopback HTTP server the test starts: verified downloads, checksum
failures, resumed partial downloads, dead URLs, and archives with members escaping the folder."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import short_fixtures as F
from conftest import run_cli

from nevisbench.errors import DataError
from nevisbench.tasks.archives import SourceFile, fetch
from nevisbench.tasks.cache import task_status


class Server:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges: list[str | None] = []
        self.break_after: int | None = None  # bytes sent before the connection drops (once)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                data = server.files.get(self.path.split("?")[0])
                server.ranges.append(self.headers.get("Range"))
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.break_after is not None:
                    self.wfile.write(body[: server.break_after])
                    self.wfile.flush()
                    server.break_after = None
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


PAYLOAD = bytes(range(256)) * 8000  # 2 MB: more than one read chunk


def test_download_is_verified_and_moved_into_place(server: Server, tmp_path: Path) -> None:
    server.files["/a/data.bin"] = PAYLOAD
    source = SourceFile("data.bin", f"{server.url}/a/data.bin", md5=hashlib.md5(PAYLOAD).hexdigest())
    seen = []
    path = fetch(source, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "data.bin.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    fetch(source, tmp_path)  # present and verified: not fetched again
    assert len(server.ranges) == 1


def test_checksum_failure_keeps_nothing_in_place(server: Server, tmp_path: Path) -> None:
    server.files["/data.bin"] = PAYLOAD
    source = SourceFile("data.bin", f"{server.url}/data.bin", sha256="0" * 64)
    with pytest.raises(
        DataError, match=r"checksum mismatch for http://127.0.0.1:\d+/data.bin: data.bin.part: sha256 [0-9a-f]{64}, expected 0{64}"
    ):
        fetch(source, tmp_path)
    assert not (tmp_path / "data.bin").exists() and (tmp_path / "data.bin.corrupt").exists()


def test_partial_download_resumes_with_a_range_request(server: Server, tmp_path: Path) -> None:
    server.files["/data.bin"] = PAYLOAD
    server.break_after = 700_000
    source = SourceFile("data.bin", f"{server.url}/data.bin", md5=hashlib.md5(PAYLOAD).hexdigest())
    with pytest.raises(DataError, match="run the same command again to resume"):
        fetch(source, tmp_path)
    assert (tmp_path / "data.bin.part").stat().st_size == 700_000
    fetch(source, tmp_path)
    assert server.ranges == [None, "bytes=700000-"]
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_dead_and_unreachable_urls_say_what_to_do(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"is dead or refused \(HTTP 404.*pass --source-dir"):
        fetch(SourceFile("gone.tar", f"{server.url}/gone.tar"), tmp_path)
    with pytest.raises(DataError, match=r"is unreachable .*--source-dir"):
        fetch(SourceFile("x.tar", "http://127.0.0.1:9/x.tar"), tmp_path, timeout=5)


@pytest.mark.slow
def test_cli_download_prepares_from_a_mirror_and_refuses_escaping_members(server: Server, tmp_path: Path) -> None:
    F.build("uiuc_cars", tmp_path / "fixture")
    server.files["/uiuc_cars/uiuc.tar.gz"] = (tmp_path / "fixture" / "uiuc.tar.gz").read_bytes()
    root = tmp_path / "root"
    done = run_cli("data", "prepare", "uiuc_cars", "--root", str(root), "--download", "--mirror", server.url, "--no-verify", "--size", "16")
    assert done.returncode == 0, done.stderr
    assert task_status(root, "uiuc_cars")["status"] == "ready"
    assert (root / "downloads" / "uiuc_cars" / "uiuc.tar.gz").exists()

    F.write_tar(tmp_path / "evil.tar.gz", [("CarData/TrainImages/pos-1.pgm", F.png()), ("../../evil.pgm", F.png())], "w:gz")
    server.files["/uiuc_cars/uiuc.tar.gz"] = (tmp_path / "evil.tar.gz").read_bytes()
    bad = run_cli("data", "prepare", "uiuc_cars", "--root", str(tmp_path / "root2"), "--download", "--mirror", server.url, "--no-verify")
    assert bad.returncode == 2
    assert "unsafe member name '../../evil.pgm'" in bad.stdout + bad.stderr and "Traceback" not in bad.stderr
    assert not list(tmp_path.rglob("evil.pgm"))

    # the catalogue's checksum is enforced on downloads too
    fresh = run_cli("data", "prepare", "uiuc_cars", "--root", str(tmp_path / "root3"), "--download", "--mirror", server.url)
    assert fresh.returncode == 2 and "checksum mismatch" in fresh.stdout + fresh.stderr
    assert "716c6078f57839bb440967fa74116da3" in fresh.stdout + fresh.stderr
