"""Reading publishers' files safely, and fetching them.

- `tar_members` / `zip_members` iterate archive members without extracting anything to disk, and
  refuse members whose names escape the archive (`../x`, `/etc/x`): a hostile or broken archive
  stops the preparation with one line naming the member. macOS metadata that publishers' archives
  carry (`__MACOSX/...`, AppleDouble `._name` stubs, `.DS_Store`) is never yielded: no reader sees it.
- `fetch` downloads a `SourceFile` over HTTP(S) with resume (`Range`), verifies its checksum and
  moves it into place atomically; a dead URL is reported with what to do instead.
- `decode_image` turns encoded bytes into a PIL image, naming the member if it cannot.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import re
import struct
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from nevisbench.errors import DataError

__all__ = ["SourceFile", "tar_members", "zip_members", "check_member_name", "is_os_metadata", "zip_stream", "decode_image",
           "read_capped", "file_digest", "verify_file", "fetch", "filename_from_url", "MAX_MEMBER_BYTES", "MAX_IMAGE_PIXELS"]

CHUNK = 1 << 20
# The largest archive member a reader holds in memory. The largest real one is CIFAR-100's
# training batch (50000 x 3072 bytes + pickle framing, ~155 MB); a member declaring more is refused
# before a byte of it is inflated.
MAX_MEMBER_BYTES = 256 << 20
# The largest image decoded, in pixels: Pillow's own decompression-bomb threshold (about a
# 9500 x 9500 RGB image); the largest real SHORT images (FGVC-Aircraft, ~1-2 MP) are far below it.
MAX_IMAGE_PIXELS = 89_478_485


@dataclass(frozen=True)
class SourceFile:
    """One file as its publisher distributes it.

    `name` is the file name in the source folder; `pattern` (a glob) replaces it where publishers'
    names are not known (then `md5_any` lists the checksums any matching file may have)."""

    name: str
    url: str | None = None
    md5: str | None = None
    sha256: str | None = None
    pattern: str | None = None
    md5_any: tuple[str, ...] = ()
    alternatives: tuple[str, ...] = ()  # other accepted forms (e.g. already gunzipped); not checksummed

    @property
    def checksum(self) -> tuple[str, str] | None:
        if self.sha256:
            return "sha256", self.sha256
        if self.md5:
            return "md5", self.md5
        return None


def filename_from_url(url: str) -> str:
    """`https://host/path/Cars_2001.zip?download=1` -> `Cars_2001.zip`."""
    return PurePosixPath(urllib.parse.urlparse(url).path).name


# -- archive members ----------------------------------------------------------------------------
def check_member_name(name: str, archive: str | Path) -> str:
    """The member name, normalised to '/' separators; a path that could escape the archive is
    refused (absolute, drive letters, any '..' component)."""
    clean = name.replace("\\", "/")
    parts = clean.split("/")  # not PurePosixPath: it interns every part, and an archive has 30k names
    if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean) or ".." in parts:
        raise DataError(f"archive {Path(str(archive)).name} has an unsafe member name '{name}' "
                        "(absolute or '..'); refusing to read it. Re-download the archive from its publisher.")
    return clean


def is_os_metadata(name: str) -> bool:
    """True for what an operating system adds beside a publisher's files: anything under
    `__MACOSX/`, AppleDouble stubs (`._<name>`, resource forks, not the file), `.DS_Store`."""
    parts = name.replace("\\", "/").split("/")
    return "__MACOSX" in parts or parts[-1].startswith("._") or parts[-1] == ".DS_Store"


_ARCHIVES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz")


def _shown(label: str) -> str:
    """The file a message names: its name, or for a member of an archive on disk (a label
    `caltech-101.zip/caltech-101/101_ObjectCategories.tar.gz`) the archive and the member, so the
    user knows which downloaded file to replace."""
    parts = Path(label).parts
    for i, part in enumerate(parts[:-1]):
        if part.lower().endswith(_ARCHIVES):
            return f"{part} (its member {'/'.join(parts[i + 1:])})"
    return Path(label).name


def tar_members(source: str | Path | IO[bytes], label: str | None = None) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(name, read) for every regular file of a tar (any compression), in stored order, less OS
    metadata (`is_os_metadata`). `read()` must be called before the next member is requested.
    Links and devices are skipped. A file object (a member of a zip) is read as a stream, once,
    front to back; only the member being read is held in memory."""
    label = label or str(source)
    try:
        tar = tarfile.open(source, mode="r:*") if isinstance(source, (str, Path)) else tarfile.open(fileobj=source, mode="r|*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot open {_shown(label)} as a tar archive: {_one_line(exc)}") from None
    with tar:
        try:
            for member in tar:
                name = check_member_name(member.name, label)
                if not member.isfile() or is_os_metadata(name):
                    continue
                _check_size(member.size, name, label)
                yield name, _tar_reader(tar, member, label)
                tar.members.clear()  # type: ignore[attr-defined]  # tarfile keeps every header read: 30k for Caltech-256
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{_shown(label)} is truncated or corrupt ({_one_line(exc)}); delete it and download it again") from None


def _tar_reader(tar: tarfile.TarFile, member: tarfile.TarInfo, label: str) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            handle = tar.extractfile(member)
            if handle is None:
                raise DataError(f"cannot read member {member.name} of {_shown(label)}")
            return handle.read()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{_shown(label)} is truncated or corrupt ({_one_line(exc)}); delete it and download it again") from None

    return read


def zip_members(source: str | Path | IO[bytes], label: str | None = None) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(name, read) for every file of a zip, in sorted name order (how the Nevis handlers list zips),
    less OS metadata (`is_os_metadata`). `zip_stream` streams one member instead."""
    label = label or str(source)
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot open {_shown(label)} as a zip archive: {_one_line(exc)}") from None
    # not closed when the loop ends: readers may collect (name, read) pairs and read them later;
    # the file is closed when the last read function is garbage-collected
    infos = {check_member_name(info.filename, label): info for info in archive.infolist()}
    for name in sorted(infos):
        if infos[name].is_dir() or is_os_metadata(name):
            continue
        _check_size(infos[name].file_size, name, label)  # zipfile never inflates past the declared size

        def read(info: zipfile.ZipInfo = infos[name]) -> bytes:
            try:
                return archive.read(info)
            except (zipfile.BadZipFile, OSError, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
                raise DataError(f"member {info.filename} of {_shown(label)} is corrupt: {_one_line(exc)}") from None

        yield name, read


def zip_stream(source: str | Path, name: str) -> IO[bytes]:
    """Member `name` (its exact path) of a zip as a file object that inflates while it is read:
    an archive inside an archive (Caltech-101's tar.gz in its zip) is streamed, never held whole."""
    try:
        archive = zipfile.ZipFile(source)
        return archive.open(name)
    except KeyError:
        raise DataError(f"{Path(source).name} has no member {name}") from None
    except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
        raise DataError(f"cannot read member {name} of {Path(source).name}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _check_size(size: int, name: str, archive: str | Path) -> None:
    if size > MAX_MEMBER_BYTES:
        raise DataError(f"member {name} of {Path(str(archive)).name} declares {size} bytes, more than the "
                        f"{MAX_MEMBER_BYTES >> 20} MiB any SHORT file needs; refusing to inflate it. Re-download the "
                        "archive from its publisher.")


def read_capped(handle: IO[bytes], limit: int, name: str) -> bytes:
    """Up to `limit` bytes from a (decompressing) stream, read in chunks; a stream with more is
    refused without inflating the rest."""
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = handle.read(min(CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
    raise DataError(f"{name} holds more than the {limit} bytes it declares; refusing to read on. "
                    "Re-download it from its publisher.")


def decode_image(data: bytes, name: str, *, draft: int | None = None) -> Any:
    """A PIL image from encoded bytes; `draft` lets JPEG decoding skip detail below that size.
    Images of more than `MAX_IMAGE_PIXELS` pixels, or of no pixels, are refused before decoding."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(f"image {name} declares {width}x{height} pixels, more than {MAX_IMAGE_PIXELS} "
                                "(a decompression bomb?); refusing to decode it")
            if width == 0 or height == 0:
                raise DataError(f"image {name} is empty ({width}x{height} pixels)")
            if draft and image.format == "JPEG":
                image.draft("RGB" if image.mode not in ("L", "1") else "L", (draft, draft))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"image {name} is a decompression bomb ({exc}); refusing to decode it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
            struct.error, zlib.error) as exc:
        raise DataError(f"cannot decode image {name}: {_one_line(exc)}") from None
    return image


# -- checksums and downloads --------------------------------------------------------------------
def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, source: SourceFile) -> str | None:
    """None when `path` has the catalogue's checksum (or none is known); else a one-line reason."""
    if source.md5_any:
        got = file_digest(path, "md5")
        if got in source.md5_any:
            return None
        return f"{path.name}: md5 {got} is not one of the catalogue's {len(source.md5_any)} checksums for these files"
    if source.checksum is None:
        return None
    algorithm, expected = source.checksum
    got = file_digest(path, algorithm)
    return None if got == expected.lower() else f"{path.name}: {algorithm} {got}, expected {expected}"


def fetch(
    source: SourceFile,
    folder: Path,
    *,
    url: str | None = None,
    verify: bool = True,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download `source` into `folder`, resuming a previous partial download (`<name>.part`),
    verify its checksum and move it into place. Returns the final path."""
    url = url or source.url
    if not url:
        raise DataError(f"{source.name} has no download URL; it must be obtained by hand (see docs/short-stream.md)")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    if target.exists() and (not verify or verify_file(target, source) is None):
        return target
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "nevisbench", **({"Range": f"bytes={have}-"} if have else {})})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already complete
            response = None
        else:
            raise DataError(
                f"{url} is dead or refused (HTTP {exc.code} {exc.reason}). Download {source.name} "
                f"from a mirror by hand and pass --source-dir (see docs/short-stream.md)"
            ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"{url} is unreachable ({reason}). Download {source.name} by hand and pass "
            f"--source-dir, or retry later (partial downloads resume)"
        ) from None
    if response is not None:
        with response:
            _receive(response, part, have, url, source, progress)
    return _verified(part, target, source, url, verify=verify)


def _receive(response: Any, part: Path, have: int, url: str, source: SourceFile,
             progress: Callable[[int, int | None], None] | None) -> None:
    """Write the response's body to `part` (appended when the server resumed at `have` bytes)."""
    if "text/html" in (response.headers.get("Content-Type") or "") and not source.name.endswith((".html", ".htm")):
        raise DataError(
            f"{url} returned a web page instead of {source.name} (a quota or confirmation page?). "
            f"Download it in a browser and pass --source-dir"
        )
    resumed = have and response.status == 206
    if not resumed:
        have = 0
    length = response.headers.get("Content-Length")
    total = have + int(length) if length else None
    done = have
    with open(part, "ab" if resumed else "wb") as out:
        try:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        except (http.client.HTTPException, OSError) as exc:
            out.flush()
            raise DataError(
                f"download of {url} broke off after {done} bytes ({exc!r}); run the same command again to resume from {part.name}"
            ) from None
        out.flush()
        os.fsync(out.fileno())
    if total is not None and done < total:
        raise DataError(f"download of {url} ended early ({done} of {total} bytes); run the same command again to resume")


def _verified(part: Path, target: Path, source: SourceFile, url: str, *, verify: bool) -> Path:
    """Move a finished download into place, after checking it (a mismatch is moved aside, named)."""
    problem = verify_file(part, source) if verify else None
    if problem:
        bad = part.with_name(source.name + ".corrupt")
        os.replace(part, bad)
        raise DataError(
            f"checksum mismatch for {url}: {problem}. The file was moved to {bad}; delete it and retry, or fetch it from another mirror"
        )
    os.replace(part, target)
    return target
