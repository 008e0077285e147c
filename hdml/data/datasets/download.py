"""Getting a dataset archive onto disk: mirrors in order, retries, resume, checksum.

A download is written to `NAME.part` beside its destination and renamed onto the destination
only once it is complete and its checksum (where one is known) matches, so a file under its
final name is always whole. The `.part` file survives an interruption; the next attempt, or
the next `hdml prepare`, resumes it with an HTTP Range request, but only from the mirror that
wrote it and only while the server still describes the same file: `NAME.part.json` records the
mirror's URL and the file's validators (ETag, Last-Modified, length); another mirror, a changed
validator or a checksum that fails after a resume restarts from zero (once per mirror), so no
file is ever spliced from two sources.

Only http(s) is spoken (the opener has no `file:` or `ftp:` handler), and an HTML "confirm"
page is followed only to a host of the dataset's mirrors or the page's own origin. A server that
declares no length is cut off after `max_bytes`.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlencode, urljoin, urlparse
from urllib.request import (
    HTTPCookieProcessor,
    HTTPDefaultErrorHandler,
    HTTPErrorProcessor,
    HTTPHandler,
    HTTPRedirectHandler,
    HTTPSHandler,
    OpenerDirector,
    Request,
    UnknownHandler,
)

from tqdm import tqdm

from hdml.core.disk import MARGIN, check_free_space

log = logging.getLogger("hdml.prepare")

CHUNK = 1 << 20
RETRY_WAIT = 2.0  # seconds before the second attempt at a mirror; doubles, triples after
USER_AGENT = "hdml-repro/0.1 (dataset preparation; python urllib)"
SCHEMES = ("http", "https")
MAX_UNDECLARED = 1 << 30  # bytes taken from a server that declares no length, without a footprint


class PrepareError(ValueError):
    """A prepare step failed (download, checksum, unsafe or malformed archive, wrong counts).

    A ValueError, so the command line reports it as a one-line error."""


class _MirrorFailed(Exception):
    """This mirror cannot serve the file: try the next one, without retrying this one."""


class _Incomplete(Exception):
    """The transfer ended early: retry, resuming from what arrived."""


class _Changed(Exception):
    """The file behind the mirror is not the one the `.part` holds the start of: restart from zero."""


TRANSIENT = (OSError, http.client.HTTPException, _Incomplete)


@dataclass(frozen=True)
class Footprint:
    """A dataset archive's published size and the size of what it unpacks to (bytes, about):
    what a prepare needs on disk, checked before its download starts."""

    archive: int
    extracted: int

    def needed(self, total: int | None, have: int) -> int:
        """Bytes a prepare still writes once `have` bytes of the archive are on disk: the rest of
        the archive (`total` as the server announces it, else the published size), its
        extraction (the published ratio of extracted to archive bytes, applied to that size, so
        a mirror's smaller or larger archive is sized by its own length) and a margin."""
        size = self.archive if total is None else total
        return size - have + self.extracted * size // self.archive + MARGIN

    def text(self) -> str:
        """The archive's size for download hints, e.g. `about 1.2 GB`."""
        return f"about {self.archive / 1e9:.1f} GB"


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def credentials_hint(url: str) -> str | None:
    """Why a mirror refuses anonymous downloads, and what the user can do instead."""
    host = urlparse(url).hostname or ""
    if host == "kaggle.com" or host.endswith(".kaggle.com"):
        return ("Kaggle serves its datasets only to signed-in users: download the file with the "
                "`kaggle` client and your own API token (~/.kaggle/kaggle.json), then pass it with --archive")
    return None


def manual_hint(dataset: str, files: tuple[tuple[str, str, str], ...]) -> str:
    """What to do when no mirror delivers: which files to fetch by hand, and how to pass them."""
    listed = " + ".join(f"`{name}` ({size}, md5 {md5})" for name, size, md5 in files)
    return (f"With no mirror left, download {listed} yourself, then run `hdml prepare {dataset} --root ROOT "
            f"--archive {files[0][0]}` (an extracted folder works too)")


class _ConfirmPage(HTMLParser):
    """Finds the real download link on an interstitial page (Google Drive's "can't scan this
    file for viruses" page): a form carrying a `confirm` field, or a link with `confirm=`."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.links: list[str] = []
        self._form: tuple[str, dict[str, str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = (a.get("action", ""), {})
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name"):
            self._form[1][a["name"]] = a.get("value", "")
        elif tag == "a" and "confirm=" in a.get("href", ""):
            self.links.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def confirm_url(page: str, base: str) -> str | None:
    """The URL that an HTML confirm page points to for the actual file, or None."""
    parser = _ConfirmPage()
    parser.feed(page)
    for action, fields in parser.forms:
        if "confirm" in fields:
            return urljoin(base, action) + "?" + urlencode(fields)
    return urljoin(base, parser.links[0]) if parser.links else None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlparse(url)
    return parts.scheme, parts.hostname or "", parts.port


def allowed_target(target: str, page: str, hosts: set[str]) -> str | None:
    """Why a confirm page's `target` must not be followed (None: it may): only http(s), only to
    one of `hosts` (the dataset's mirrors) or the page's own origin."""
    parts = urlparse(target)
    if parts.scheme not in SCHEMES:
        return f"its confirm page points to a {parts.scheme or 'relative'}: URL ({target}); only http(s) is followed"
    if parts.hostname not in hosts and _origin(target) != _origin(page):
        return f"its confirm page points to {parts.hostname}, not a host of this dataset's mirrors"
    return None


def opener() -> OpenerDirector:
    """An opener that speaks http(s) only (urllib's default one also reads `file:`, `ftp:` and
    `data:` URLs), keeping cookies across a confirm page and its file."""
    director = OpenerDirector()
    for handler in (UnknownHandler(), HTTPHandler(), HTTPSHandler(), HTTPDefaultErrorHandler(), HTTPRedirectHandler(),
                    HTTPErrorProcessor(), HTTPCookieProcessor(CookieJar())):
        director.add_handler(handler)
    return director


@dataclass(frozen=True)
class Origin:
    """Where a `.part` file's bytes come from: the mirror's URL and the server's validators."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    length: int | None = None

    @staticmethod
    def path(part: Path) -> Path:
        return part.with_name(part.name + ".json")

    @classmethod
    def read(cls, part: Path) -> Origin | None:
        """The record beside `part`, or None when there is none or it is not one of ours."""
        try:
            data = json.loads(cls.path(part).read_text())
            return cls(str(data["url"]), data.get("etag"), data.get("last_modified"), data.get("length"))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def write(self, part: Path) -> None:
        self.path(part).write_text(json.dumps(self.__dict__))

    def differs(self, other: Origin) -> str | None:
        """Which validator says the two are different files (unknown ones say nothing)."""
        for name in ("etag", "last_modified", "length"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is not None and theirs is not None and mine != theirs:
                return f"{name.replace('_', '-')} {mine!r} became {theirs!r}"
        return None


def discard(part: Path) -> None:
    """Remove a `.part` file and its record."""
    part.unlink(missing_ok=True)
    Origin.path(part).unlink(missing_ok=True)


def _total_from_range(header: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header such as `bytes 100-999/1000`."""
    if not header or not header.startswith("bytes "):
        return None, None
    span, _, total = header[6:].partition("/")
    first = int(span.split("-")[0]) if span != "*" else None
    return first, int(total) if total.isdigit() else None


def _fetch(opener: OpenerDirector, url: str, part: Path, timeout: float, follow: bool = True,
           resume: bool = True, footprint: Footprint | None = None, mirror: str | None = None,
           hosts: frozenset[str] = frozenset(), max_bytes: int = MAX_UNDECLARED) -> bool:
    """One attempt: append to (or restart) `part` from `url` until the server's size is reached;
    with a `footprint`, first check that the disk holds the rest of the archive and its extraction.
    `mirror`: the URL of the list this one came from (a confirm page's target is another).
    Returns whether the file was resumed from bytes an earlier attempt wrote."""
    mirror = mirror or url
    if urlparse(url).scheme not in SCHEMES:
        raise _MirrorFailed(f"not an http(s) URL ({urlparse(url).scheme or 'no'} scheme)")
    before = Origin.read(part) if part.exists() else None
    if part.exists() and (before is None or before.url != mirror):
        discard(part)  # another mirror's bytes, or of unknown origin: never spliced onto
    start = part.stat().st_size if resume and part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
        if before.etag and not before.etag.startswith("W/"):
            headers["If-Range"] = before.etag  # a changed file comes back whole (200), not as a range
        elif before.last_modified:
            headers["If-Range"] = before.last_modified
    try:
        req = Request(url, headers=headers)
    except ValueError as exc:
        raise _MirrorFailed(str(exc)) from None
    try:
        resp = opener.open(req, timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and start:
            if _total_from_range(exc.headers.get("Content-Range"))[1] == start:
                return True  # the partial file is already the whole file
            # Not this file's size: often a small HTML page in front of the file. Ask without
            # a Range; a confirm page is then followed (resuming), a file restarts from zero.
            return _fetch(opener, url, part, timeout, follow, resume=False, footprint=footprint, mirror=mirror,
                          hosts=hosts, max_bytes=max_bytes)
        if exc.code in (408, 429) or exc.code >= 500:
            raise
        raise _MirrorFailed(f"HTTP {exc.code} {exc.reason}") from None
    with resp:
        if resp.headers.get_content_type() == "text/html":
            target = confirm_url(resp.read(CHUNK).decode("utf-8", "replace"), resp.geturl()) if follow else None
            if target is None:
                raise _MirrorFailed("served an HTML page instead of the file (a sign-in, quota or error page)")
            if (why := allowed_target(target, resp.geturl(), hosts | {urlparse(mirror).hostname})) is not None:
                raise _MirrorFailed(why)
            return _fetch(opener, target, part, timeout, follow=False, footprint=footprint, mirror=mirror,
                          hosts=hosts, max_bytes=max_bytes)  # resumes, if it can
        if resp.status == 206:
            first, total = _total_from_range(resp.headers.get("Content-Range"))
            if first != start:
                discard(part)
                raise _Incomplete(f"server resumed at byte {first}, not {start}; restarting")
            mode = "ab"
        else:
            start, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        origin = Origin(mirror, resp.headers.get("ETag"), resp.headers.get("Last-Modified"), total)
        if start and (why := before.differs(origin)) is not None:
            discard(part)
            raise _Changed(f"the file changed since the partial download ({why})")
        if footprint is not None:
            check_free_space(part.parent, footprint.needed(total, start),
                             f"downloading and extracting {part.name.removesuffix('.part')}",
                             "free some space or put --root on a larger disk")
        origin.write(part)
        cap = total if total is not None else max_bytes
        with open(part, mode) as fh, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                          desc=part.name.removesuffix(".part"), disable=None) as bar:
            size = start
            while chunk := resp.read(CHUNK):
                size += len(chunk)
                if size > cap:
                    break
                fh.write(chunk)
                bar.update(len(chunk))
        if size > cap:
            discard(part)
            raise _MirrorFailed(f"sent more than {cap:,} bytes without declaring its length; stopped")
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Incomplete(f"connection ended at byte {size} of {total}")
    return start > 0


def download(urls: list[str], dest: Path, md5: str | None, *, retries: int = 3, wait: float | None = None,
             timeout: float = 60.0, footprint: Footprint | None = None, max_bytes: int | None = None) -> str:
    """Download `dest` from the first mirror that delivers it whole (and with the right MD5,
    if `md5` is given); returns the file's MD5. An existing `dest` is kept only if it has the
    right MD5: without a checksum nothing tells it is the file these mirrors serve. With a
    `footprint`, a disk too small for the archive and its extraction stops it before it writes
    (DiskSpaceError). A server declaring no length may send at most `max_bytes` (default: twice
    the footprint's archive, else MAX_UNDECLARED)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if md5 is not None and md5sum(dest) == md5:
            return md5
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    if max_bytes is None:
        max_bytes = 2 * footprint.archive if footprint is not None else MAX_UNDECLARED
    hosts = frozenset(h for u in urls if (h := urlparse(u).hostname))
    http = opener()
    failures = []
    for url in urls:
        attempt, restarted = 1, False
        while True:
            try:
                resumed = _fetch(http, url, part, timeout, footprint=footprint, hosts=hosts, max_bytes=max_bytes)
            except _MirrorFailed as exc:
                failures.append(f"{url}: {exc}" + (f" ({hint})" if (hint := credentials_hint(url)) else ""))
                break
            except _Changed as exc:
                if restarted:
                    failures.append(f"{url}: {exc}, again after restarting from zero")
                    break
                log.warning("%s: %s; restarting from zero", url, exc)
                restarted = True
                continue
            except TRANSIENT as exc:
                if attempt == retries:
                    failures.append(f"{url}: {exc} (gave up after {retries} attempts)")
                    break
                log.warning("%s: %s; retrying (%d of %d)", url, exc, attempt + 1, retries)
                time.sleep((RETRY_WAIT if wait is None else wait) * attempt)
                attempt += 1
                continue
            digest = md5sum(part)
            if md5 is not None and digest != md5:
                discard(part)
                if resumed and not restarted:  # perhaps spliced from two versions: once more, whole
                    log.warning("%s: checksum mismatch after resuming; restarting from zero", url)
                    restarted = True
                    continue
                failures.append(f"{url}: checksum mismatch: md5 {digest}, expected {md5}")
                break
            os.replace(part, dest)
            Origin.path(part).unlink(missing_ok=True)
            return digest
    raise PrepareError(f"could not download {dest.name}:\n  " + "\n  ".join(failures or ["no mirror given"]))


@dataclass(frozen=True)
class Fetched:
    """An archive on disk; `official` when its MD5 is the published one."""

    path: Path
    official: bool


def fetch(dest: Path, *, urls: list[str], md5: str | None, official_md5: str | None,
          archive: Path | None, footprint: Footprint | None = None) -> Fetched:
    """The archive a prepare works from: the user's own file (checked against `md5` if given)
    or a download to `dest` (checked against `md5`, else the published checksum; its disk
    checked against `footprint` first)."""
    if archive is not None:
        if not archive.is_file():
            raise FileNotFoundError(f"--archive {archive}: no such file")
        digest = md5sum(archive)
        if md5 is not None and digest != md5:
            raise PrepareError(f"{archive}: checksum mismatch: md5 {digest}, expected {md5}")
        return Fetched(archive, digest == official_md5)
    digest = download(urls, dest, md5 or official_md5, footprint=footprint)
    return Fetched(dest, digest == official_md5)
