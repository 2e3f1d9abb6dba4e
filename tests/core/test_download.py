"""Downloading zipped model folders from a loopback HTTP server (no internet)."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import pytest

from napari_anystar import cli
from napari_anystar._paths import user_cache_dir, user_config_dir, user_models_dir
from napari_anystar.model import registry
from napari_anystar.model.download import DownloadError, fetch_model
from napari_anystar.model.registry import InvalidModelError


class Server:
    """Serves files from a folder on 127.0.0.1 and counts the requests per path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(server.root), **kwargs)

            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served = Server(tmp_path / "www")
    served.root.mkdir()
    yield served
    served.close()


def zip_model(model_dir: Path, zip_path: Path, folder: str | None) -> str:
    """Zip a model folder (inside ``folder/`` or at the zip's root); returns its sha256."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        for file in sorted(model_dir.iterdir()):
            zf.write(file, f"{folder}/{file.name}" if folder else file.name)
    return hashlib.sha256(zip_path.read_bytes()).hexdigest()


def test_good_hash_installs_lists_and_then_uses_the_cache(server, tiny_model_dir):
    sha = zip_model(tiny_model_dir, server.root / "tiny.zip", "tiny-dl")
    entry = fetch_model(server.url("tiny.zip"), sha)
    assert entry.name == "tiny-dl"
    assert entry.source == "user"
    assert entry.path == (user_models_dir() / "tiny-dl").resolve()
    registry.validate_model_folder(entry.path)
    assert registry.list_models() == [entry]
    assert server.hits == {"/tiny.zip": 1}
    assert any((user_cache_dir() / "downloads").iterdir())
    assert sorted(p.name for p in user_models_dir().iterdir()) == ["tiny-dl"]  # no temp left

    again = fetch_model(server.url("tiny.zip"), sha.upper())
    assert again == entry
    assert server.hits == {"/tiny.zip": 1}  # served from the cache
    assert registry.list_models() == [entry]


def test_bad_hash_fails_clearly_and_leaves_no_model(server, tiny_model_dir):
    sha = zip_model(tiny_model_dir, server.root / "tiny.zip", "tiny-dl")
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DownloadError, match="does not match") as info:
        fetch_model(server.url("tiny.zip"), wrong)
    assert "\n" not in str(info.value)
    assert server.hits == {"/tiny.zip": 1}
    assert registry.list_models() == []
    assert list(user_models_dir().iterdir()) == []
    assert not (user_config_dir() / "model_folders.json").exists()
    assert sha != wrong


def test_malformed_hash_is_refused_before_downloading(server, tiny_model_dir):
    zip_model(tiny_model_dir, server.root / "tiny.zip", "tiny-dl")
    with pytest.raises(DownloadError, match="64 hex digits"):
        fetch_model(server.url("tiny.zip"), "abc123")
    assert server.hits == {}


def test_missing_file_is_a_download_error(server):
    with pytest.raises(DownloadError, match="failed"):
        fetch_model(server.url("nothing.zip"), "0" * 64)
    assert registry.list_models() == []


def test_zip_without_top_folder_and_custom_name(server, tiny_model_dir):
    sha = zip_model(tiny_model_dir, server.root / "flat-model.zip", None)
    assert fetch_model(server.url("flat-model.zip"), sha).name == "flat-model"
    named = fetch_model(server.url("flat-model.zip"), sha, name="renamed")
    assert named.name == "renamed"
    assert [e.name for e in registry.list_models()] == ["flat-model", "renamed"]
    assert server.hits == {"/flat-model.zip": 1}


def test_name_clash_with_a_different_model_is_refused(server, tiny_model_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for file in tiny_model_dir.iterdir():
        (other / file.name).write_bytes(file.read_bytes())
    (other / "weights_best.h5").write_bytes((other / "weights_best.h5").read_bytes() + b"\0")
    (user_models_dir() / "tiny-dl").mkdir()
    for file in other.iterdir():
        (user_models_dir() / "tiny-dl" / file.name).write_bytes(file.read_bytes())
    sha = zip_model(tiny_model_dir, server.root / "tiny.zip", "tiny-dl")
    with pytest.raises(DownloadError, match="already exists"):
        fetch_model(server.url("tiny.zip"), sha)


def test_zip_without_a_model_is_refused(server, tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "readme.txt").write_text("no model here")
    sha = zip_model(junk, server.root / "junk.zip", "junk")
    with pytest.raises(InvalidModelError, match="no model folders"):
        fetch_model(server.url("junk.zip"), sha)
    assert registry.list_models() == []
    assert list(user_models_dir().iterdir()) == []


def test_cli_fetch_and_bad_hash(server, tiny_model_dir, capsys):
    sha = zip_model(tiny_model_dir, server.root / "tiny.zip", "tiny-dl")
    assert cli.main(["models", "--fetch", server.url("tiny.zip"), "--sha256", "f" * 64]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # progress bar, then the reason
    assert [line for line in err if "error" in line] == err[-1:]
    assert err[-1].startswith("anystar models: error: download of")
    assert "does not match" in err[-1]
    assert cli.main(["models", "--fetch", server.url("tiny.zip")]) == 2
    assert "--sha256" in capsys.readouterr().err

    assert cli.main(["models", "--fetch", server.url("tiny.zip"), "--sha256", sha]) == 0
    assert "downloaded tiny-dl (user)" in capsys.readouterr().out
    assert [e.name for e in registry.list_models()] == ["tiny-dl"]
