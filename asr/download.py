"""Fetching public corpora: a streamed, resumable download, a checksum, a safe extraction.

Each archive is verified against its published checksum before anything is extracted,
and extraction refuses any member that would land outside the target folder (absolute
paths, ``..`` components, links pointing out, directly or through other links, device
files), so a tampered archive cannot write elsewhere.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import string
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from asr.errors import AsrError
from asr.terminal import progress_bar_options

CHUNK = 1 << 20
log = logging.getLogger(__name__)


class DownloadError(AsrError):
    pass


@dataclass(frozen=True)
class Archive:
    url: str
    checksum: str | None  # SHA-256 (or MD5) hex digest; None where no published value could be checked


# SHA-256 of the OpenSLR 12 archives as torchaudio 2.11 pins them (torchaudio/datasets/librispeech.py).
_LIBRISPEECH_SHA256 = {
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
}

ARCHIVES: dict[str, dict[str, Archive]] = {
    "librispeech": {subset: Archive(f"https://www.openslr.org/resources/12/{subset}.tar.gz", sha256)
                    for subset, sha256 in _LIBRISPEECH_SHA256.items()},
    # SHA-256 as torchaudio 2.11 pins it (torchaudio/datasets/ljspeech.py).
    "ljspeech": {"LJSpeech-1.1": Archive("https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2",
                                         "be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5")},
    # No published checksum for AN4 could be verified, so the user supplies one.
    "an4": {"an4": Archive("http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz", None)},
}
# What a download fetches when no parts are named: LibriSpeech's 100-hour setup.
DEFAULT_PARTS = {"librispeech": ["train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other"]}


def download_corpus(corpus: str, folder: str | os.PathLike, parts: Sequence[str] | None = None,
                    checksum: str | None = None, progress: bool = False) -> None:
    """Download, verify and extract ``parts`` of ``corpus`` (LibriSpeech subsets; the one archive
    of the others) into ``folder``. ``checksum`` stands in for a missing published one."""
    if corpus not in ARCHIVES:
        raise DownloadError(f"{corpus}: no public download (downloadable: {', '.join(ARCHIVES)}); "
                            "fetch it yourself and prepare the folder")
    archives = ARCHIVES[corpus]
    names = list(parts or DEFAULT_PARTS.get(corpus, archives))
    for name in names:
        if name not in archives:
            raise DownloadError(f"{corpus}: no archive named {name!r} (choose from {', '.join(archives)})")
    if checksum and len(names) != 1:
        raise DownloadError(f"a checksum names one archive, and {len(names)} are to be downloaded")
    for name in names:
        fetch(archives[name].url, Path(folder), checksum or archives[name].checksum, progress)


def fetch(url: str, folder: Path, checksum: str | None, progress: bool = False) -> Path:
    """Download ``url`` into ``folder``, verify it, and extract it there, once: a marker file
    records a finished extraction, and a verified archive is not downloaded again."""
    name = url.rsplit("/", 1)[-1]
    archive, marker = folder / name, folder / f".{name}.extracted"
    if marker.exists():
        log.info("%s: extracted before", archive)
        return archive
    if checksum is None:
        raise DownloadError(f"{url}: no published checksum is known; give its SHA-256 or MD5 to verify the download")
    folder.mkdir(parents=True, exist_ok=True)
    if not archive.exists():
        download(url, archive, progress)
    verify(archive, checksum)
    extract(archive, folder)
    marker.touch()
    return archive


def download(url: str, target: Path, progress: bool = False) -> None:
    """Stream ``url`` to ``target`` through ``target.part``, resuming a partial file where the
    server honours byte ranges (and starting over where it does not)."""
    partial = target.with_name(target.name + ".part")
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if getattr(response, "status", None) != 206:
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length else None
            with open(partial, "ab" if have else "wb") as out, tqdm(
                    total=total, initial=have, desc=target.name, unit="B", unit_scale=True, unit_divisor=1024,
                    **progress_bar_options(progress)) as bar:
                try:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
                except http.client.IncompleteRead as error:
                    out.write(error.partial)  # the whole chunks before the cut, kept for resuming
                    raise
    except urllib.error.HTTPError as error:
        if error.code != 416 or not have:  # 416: the range starts at the end, so the partial file is whole
            raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
        total = have
    except http.client.HTTPException as error:  # a cut-short chunked body, a malformed response
        raise DownloadError(f"{url}: download interrupted ({error!r}); run again to resume") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(f"{url}: download failed ({reason}); run again to resume") from None
    size = partial.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: connection closed after {size} of {total} bytes; run again to resume")
    os.replace(partial, target)


def verify(path: Path, checksum: str) -> None:
    """Compare the file's digest with ``checksum``: 64 hex digits for SHA-256, 32 for MD5."""
    expected = checksum.strip().lower()
    algorithm = {64: "sha256", 32: "md5"}.get(len(expected))
    if algorithm is None or set(expected) - set(string.hexdigits):
        raise DownloadError(f"{checksum!r}: not a SHA-256 (64 hex digits) or MD5 (32 hex digits) checksum")
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise DownloadError(f"{path}: {algorithm} is {digest.hexdigest()}, expected {expected} "
                            "(a corrupt or different file: delete it to download again)")


def extract(archive: Path, folder: Path) -> None:
    """Unpack a tar (gzip, bzip2, xz or none) or zip archive into ``folder``: into a temporary
    folder there first, renamed into place once every member is out, so a refused or broken
    archive leaves nothing behind."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{archive.name}."))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as package:
                for name in package.namelist():
                    _check_destination(archive, name, staging, folder)
                package.extractall(staging)
        else:
            _extract_tar(archive, staging, folder)
        _move_into(staging, folder)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as error:
        raise DownloadError(f"{archive}: cannot extract ({error})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_tar(archive: Path, staging: Path, folder: Path) -> None:
    """Each member is checked against the real paths of what is already on disk just before
    extractall writes it (it takes the members from the generator one at a time), so a chain of
    links (``a -> .``, ``a/b -> ..``, ``a/b/x``) is caught where checking link targets as text
    is not; Python's own "data" filter (3.11.4+, 3.10.12+) checks again where it exists."""
    with tarfile.open(archive) as package:
        members = package.getmembers()
        checked = (_check_tar_member(archive, member, staging, folder) for member in members)
        package.extractall(staging, members=checked, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        for member in members:  # a link made before a later one changed what its target resolves to
            if member.issym() and not _inside(staging / member.name, staging):
                raise DownloadError(f"{archive}: link {member.name!r} points outside {folder} "
                                    f"({member.linkname!r}); not extracted")


def _check_tar_member(archive: Path, member: tarfile.TarInfo, staging: Path, folder: Path) -> tarfile.TarInfo:
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise DownloadError(f"{archive}: member {member.name!r} is a device or pipe; not extracted")
    _check_destination(archive, member.name, staging, folder)
    if member.issym() or member.islnk():
        # A symbolic link's target is relative to its own folder, a hard link's to the archive root.
        base = os.path.dirname(member.name) if member.issym() else ""
        if not _inside(staging / base / member.linkname, staging):
            raise DownloadError(f"{archive}: link {member.name!r} points outside {folder} "
                                f"({member.linkname!r}); not extracted")
    return member


def _check_destination(archive: Path, name: str, staging: Path, folder: Path) -> None:
    if not _inside(staging / name, staging):
        raise DownloadError(f"{archive}: member {name!r} would be written outside {folder}; not extracted")


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, its links resolved as they are on disk now, lies in ``folder``."""
    return Path(os.path.realpath(path)).is_relative_to(folder)


def _move_into(source: Path, target: Path) -> None:
    """Rename each entry of ``source`` into ``target``, merging into folders already there
    (every LibriSpeech subset unpacks into one ``LibriSpeech/``)."""
    for entry in source.iterdir():
        destination = target / entry.name
        if entry.is_dir() and not entry.is_symlink() and destination.is_dir() and not destination.is_symlink():
            _move_into(entry, destination)
        else:
            os.replace(entry, destination)
