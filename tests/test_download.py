"""Downloading, checksums and safe extraction, on archives and servers the tests build (no internet)."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import tarfile
import threading
import zipfile

import pytest

from asr.download import DownloadError, download, download_corpus, extract, fetch, verify
from helpers import assert_one_line_error, run_cli

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def add_file(tar: tarfile.TarFile, name: str, data: bytes = b"speech") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_link(tar: tarfile.TarFile, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


def make_tar(path, mode: str = "w:gz", extra=None):
    with tarfile.open(path, mode) as tar:
        add_file(tar, "Corpus/readme.txt", b"hello")
        add_file(tar, "Corpus/a/b/clip.txt", b"clip")
        add_link(tar, "Corpus/latest", "a/b/clip.txt")  # a link that stays inside is fine
        if extra:
            extra(tar)
    return path


def listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("mode, suffix", [("w:gz", "tar.gz"), ("w:bz2", "tar.bz2")])
def test_extract_tar(tmp_path, mode, suffix):
    archive = make_tar(tmp_path / f"corpus.{suffix}", mode)
    extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "Corpus" / "a" / "b" / "clip.txt").read_bytes() == b"clip"
    assert (tmp_path / "out" / "Corpus" / "latest").read_bytes() == b"clip"


def test_extract_zip(tmp_path):
    with zipfile.ZipFile(tmp_path / "corpus.zip", "w") as package:
        package.writestr("Corpus/wavs/x.txt", "x")
    extract(tmp_path / "corpus.zip", tmp_path / "out")
    assert (tmp_path / "out" / "Corpus" / "wavs" / "x.txt").read_text() == "x"


MALICIOUS = {
    "absolute path": lambda tar: add_file(tar, "/tmp/asr-evil.txt"),
    "parent component": lambda tar: add_file(tar, "Corpus/../../evil.txt"),
    "symlink out": lambda tar: add_link(tar, "Corpus/escape", "../../outside"),
    "absolute symlink": lambda tar: add_link(tar, "Corpus/passwd", "/etc/passwd"),
    "hard link out": lambda tar: add_link(tar, "Corpus/hard", "../outside.txt", tarfile.LNKTYPE),
    "fifo": lambda tar: tar.addfile(_fifo("Corpus/pipe")),
}


def _fifo(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.FIFOTYPE
    return info


@pytest.mark.parametrize("kind", MALICIOUS)
def test_extract_refuses_members_escaping_the_folder(tmp_path, kind):
    archive = make_tar(tmp_path / "evil.tar.gz", extra=MALICIOUS[kind])
    out = tmp_path / "box" / "out"
    out.mkdir(parents=True)
    with pytest.raises(DownloadError, match=re.escape(str(archive)) + ".*not extracted"):
        extract(archive, out)
    assert listing(tmp_path / "box") == ["out"]  # every member is checked before anything is written


def symlink_chain(tar: tarfile.TarFile) -> None:
    """Each link's target, read as text, stays inside; followed on disk, a/b is the folder's parent."""
    add_link(tar, "a", ".")
    add_link(tar, "a/b", "..")
    add_file(tar, "a/b/escaped.txt", b"evil")


@pytest.mark.parametrize("data_filter", [True, False], ids=["with the data filter", "without it"])
def test_extract_refuses_a_chain_of_symlinks(tmp_path, monkeypatch, data_filter):
    if not data_filter:  # as on Python before 3.11.4 and 3.10.12: links followed as they are
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
        monkeypatch.setattr(tarfile.TarFile, "extraction_filter", staticmethod(tarfile.fully_trusted_filter))
    archive = make_tar(tmp_path / "evil.tar.gz", extra=symlink_chain)
    out = tmp_path / "box" / "out"
    out.mkdir(parents=True)
    with pytest.raises(DownloadError, match=re.escape(f"{archive}: link 'a/b' points outside {out}")):
        extract(archive, out)
    assert listing(tmp_path / "box") == ["out"]  # nothing escaped, nothing half-extracted left


def test_extract_merges_into_folders_already_there(tmp_path):
    """Archives that share a top folder (LibriSpeech's subsets) unpack side by side."""
    with tarfile.open(tmp_path / "second.tar", "w") as tar:
        add_file(tar, "Corpus/a/other.txt", b"other")
    extract(make_tar(tmp_path / "first.tar.gz"), tmp_path / "out")
    extract(tmp_path / "second.tar", tmp_path / "out")
    assert listing(tmp_path / "out") == ["Corpus", "Corpus/a", "Corpus/a/b", "Corpus/a/b/clip.txt",
                                         "Corpus/a/other.txt", "Corpus/latest", "Corpus/readme.txt"]


def test_extract_refuses_zip_traversal(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as package:
        package.writestr("ok.txt", "fine")
        package.writestr("../evil.txt", "evil")
    with pytest.raises(DownloadError, match="'../evil.txt' would be written outside"):
        extract(tmp_path / "evil.zip", tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "ok.txt").exists()


def test_extract_corrupt_archive(tmp_path):
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b\x08 not really gzip")
    with pytest.raises(DownloadError, match=re.escape(f"{tmp_path / 'broken.tar.gz'}: cannot extract")):
        extract(tmp_path / "broken.tar.gz", tmp_path / "out")


def test_verify_sha256_and_md5(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(PAYLOAD)
    verify(path, sha256(PAYLOAD).upper())
    verify(path, hashlib.md5(PAYLOAD).hexdigest())
    with pytest.raises(DownloadError, match=re.escape(f"{path}: sha256 is {sha256(PAYLOAD)}, expected {'0' * 64}")):
        verify(path, "0" * 64)
    with pytest.raises(DownloadError, match="not a SHA-256"):
        verify(path, "xyz")


def test_download_file_url_starts_over_without_ranges(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    target = tmp_path / "dl" / "source.bin"
    target.parent.mkdir()
    (tmp_path / "dl" / "source.bin.part").write_bytes(b"stale bytes")  # file:// ignores Range
    download(source.as_uri(), target)
    assert target.read_bytes() == PAYLOAD
    assert not (tmp_path / "dl" / "source.bin.part").exists()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /corpus.bin, honouring ``Range: bytes=N-``; records the ranges asked for.
    With ``cut_at`` set, the first response is chunked and closes the connection after that many bytes."""

    ranges: list[str] = []
    cut_at: int | None = None

    def do_GET(self):
        if self.path != "/corpus.bin":
            self.send_error(404, "Not Found")
            return
        requested = self.headers.get("Range")
        self.ranges.append(requested)
        start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1)) if requested else 0
        self.send_response(206 if requested else 200)
        if self.cut_at is not None:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for offset in range(start, len(PAYLOAD), 1 << 16):  # announced in full, sent up to cut_at
                self.wfile.write(b"%x\r\n" % (1 << 16) + PAYLOAD[offset:min(offset + (1 << 16), self.cut_at)])
                if offset + (1 << 16) > self.cut_at:
                    break
                self.wfile.write(b"\r\n")
            type(self).cut_at = None
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(PAYLOAD) - start))
        self.end_headers()
        self.wfile.write(PAYLOAD[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    RangeHandler.ranges, RangeHandler.cut_at = [], None
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_resumes_a_partial_file(server, tmp_path):
    target = tmp_path / "corpus.bin"
    (tmp_path / "corpus.bin.part").write_bytes(PAYLOAD[:300_000])
    download(f"{server}/corpus.bin", target)
    assert RangeHandler.ranges == ["bytes=300000-"]
    assert target.read_bytes() == PAYLOAD


def test_download_cut_short_is_resumed_by_a_rerun(server, tmp_path):
    """A connection closed before Content-Length bytes came (http.client.IncompleteRead) keeps the
    partial file, and the next run asks for the rest."""
    RangeHandler.cut_at = 300_000
    target = tmp_path / "corpus.bin"
    with pytest.raises(DownloadError, match=re.escape(f"{server}/corpus.bin: download interrupted")
                       + ".*; run again to resume"):
        download(f"{server}/corpus.bin", target)
    assert not target.exists()
    partial = (tmp_path / "corpus.bin.part").read_bytes()
    have = len(partial)
    assert 0 < have <= 300_000 and partial == PAYLOAD[:have]
    download(f"{server}/corpus.bin", target)
    assert RangeHandler.ranges == [None, f"bytes={have}-"]
    assert target.read_bytes() == PAYLOAD


def test_download_http_error(server, tmp_path):
    with pytest.raises(DownloadError, match=re.escape(f"{server}/missing.tar.gz: HTTP 404")):
        download(f"{server}/missing.tar.gz", tmp_path / "missing.tar.gz")


def test_fetch_verifies_before_extracting_and_runs_once(tmp_path):
    (tmp_path / "source").mkdir()
    archive = make_tar(tmp_path / "source" / "corpus.tar.gz")
    good = sha256(archive.read_bytes())
    folder = tmp_path / "corpora"
    with pytest.raises(DownloadError, match="sha256 is .* expected 0000"):
        fetch(archive.as_uri(), folder, "0" * 64)
    assert listing(folder) == ["corpus.tar.gz"]  # downloaded, not extracted
    (folder / "corpus.tar.gz").unlink()
    fetch(archive.as_uri(), folder, good)
    assert (folder / "Corpus" / "readme.txt").read_bytes() == b"hello"
    archive.unlink()  # extracted before: nothing is fetched again
    fetch(archive.as_uri(), folder, good)


def test_download_corpus_needs_a_known_archive_and_checksum(tmp_path):
    with pytest.raises(DownloadError, match="kaldi: no public download"):
        download_corpus("kaldi", tmp_path)
    with pytest.raises(DownloadError, match="no published checksum is known"):
        download_corpus("an4", tmp_path)  # fails before any network access
    with pytest.raises(DownloadError, match="no archive named 'train-clean-101'"):
        download_corpus("librispeech", tmp_path, ["train-clean-101"])
    with pytest.raises(DownloadError, match="a checksum names one archive, and 5"):
        download_corpus("librispeech", tmp_path, checksum="0" * 64)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_cli_download_errors_are_one_line(tmp_path):
    assert_one_line_error(run_cli("prepare", "commonvoice", tmp_path, "--out", tmp_path / "o", "--download"),
                          "commonvoice: no public download")
    assert_one_line_error(run_cli("prepare", "kaldi", tmp_path, "--out", tmp_path / "o", "--checksum", "0" * 64),
                          "--checksum")
