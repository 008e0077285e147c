"""Downloads from a local server: mirrors, retries, resume, checksum, Drive confirm pages."""
from __future__ import annotations

import hashlib
import json
import random

import pytest

from hdml.data.datasets.download import PrepareError, confirm_url, credentials_hint, download, fetch
from httpserver import FileServer

BODY = random.Random(0).randbytes(300_000)
MD5 = hashlib.md5(BODY).hexdigest()


def test_plain_download_returns_md5_and_leaves_no_part(http_server: FileServer, tmp_path):
    url = http_server.add("/a.bin", BODY)
    dest = tmp_path / "dl" / "a.bin"
    assert download([url], dest, MD5, wait=0) == MD5
    assert dest.read_bytes() == BODY
    assert not (tmp_path / "dl" / "a.bin.part").exists()


def test_dropped_connection_is_resumed_with_range(http_server: FileServer, tmp_path):
    url = http_server.add("/a.bin", BODY, drop_after=100_000, drops=1)
    dest = tmp_path / "a.bin"
    assert download([url], dest, MD5, wait=0) == MD5
    assert dest.read_bytes() == BODY
    assert http_server.requests == [("/a.bin", None), ("/a.bin", "bytes=100000-")]


def test_partial_file_survives_and_next_call_resumes(http_server: FileServer, tmp_path):
    url = http_server.add("/a.bin", BODY, drop_after=120_000, drops=2)
    dest = tmp_path / "a.bin"
    with pytest.raises(PrepareError, match="gave up after 1 attempts"):
        download([url], dest, MD5, retries=1, wait=0)
    assert not dest.exists()  # nothing under the final name while incomplete
    assert (tmp_path / "a.bin.part").stat().st_size == 120_000
    # The second call's first try drops again (at 240,000 bytes), its retry finishes.
    assert download([url], dest, MD5, retries=2, wait=0) == MD5
    assert dest.read_bytes() == BODY
    assert [r for _, r in http_server.requests] == [None, "bytes=120000-", "bytes=240000-"]


def test_server_ignoring_range_restarts_from_zero(http_server: FileServer, tmp_path):
    url = http_server.add("/a.bin", BODY, ranges=False)
    (tmp_path / "a.bin.part").write_bytes(b"x" * 5000)  # stale, must not be kept
    assert download([url], tmp_path / "a.bin", MD5, wait=0) == MD5
    assert (tmp_path / "a.bin").read_bytes() == BODY


def test_complete_part_file_answered_416_is_finished(http_server: FileServer, tmp_path):
    url = http_server.add("/a.bin", BODY)
    (tmp_path / "a.bin.part").write_bytes(BODY)
    (tmp_path / "a.bin.part.json").write_text(json.dumps({"url": url}))  # this mirror wrote it
    assert download([url], tmp_path / "a.bin", MD5, wait=0) == MD5
    assert http_server.requests == [("/a.bin", f"bytes={len(BODY)}-")]
    assert (tmp_path / "a.bin").read_bytes() == BODY


def test_404_on_first_mirror_then_second(http_server: FileServer, tmp_path):
    dead = http_server.url("/gone.bin")
    url = http_server.add("/a.bin", BODY)
    assert download([dead, url], tmp_path / "a.bin", MD5, wait=0) == MD5
    assert [p for p, _ in http_server.requests] == ["/gone.bin", "/a.bin"]  # a 404 is not retried


def test_all_mirrors_failing_names_each(http_server: FileServer, tmp_path):
    dead = http_server.url("/gone.bin")
    broken = http_server.add("/broken.bin", status=503)
    with pytest.raises(PrepareError) as err:
        download([dead, broken], tmp_path / "a.bin", MD5, retries=2, wait=0)
    assert f"{dead}: HTTP 404" in str(err.value)
    assert f"{broken}: HTTP Error 503" in str(err.value) and "after 2 attempts" in str(err.value)
    assert [p for p, _ in http_server.requests] == ["/gone.bin", "/broken.bin", "/broken.bin"]
    assert not list(tmp_path.iterdir())


def test_wrong_checksum_keeps_nothing_and_tries_next_mirror(http_server: FileServer, tmp_path):
    bad = http_server.add("/bad.bin", BODY[:-1] + bytes([BODY[-1] ^ 1]))
    good = http_server.add("/a.bin", BODY)
    with pytest.raises(PrepareError, match=f"checksum mismatch: md5 [0-9a-f]{{32}}, expected {MD5}"):
        download([bad], tmp_path / "a.bin", MD5, wait=0)
    assert not list(tmp_path.iterdir())
    assert download([bad, good], tmp_path / "a.bin", MD5, wait=0) == MD5


def test_existing_file_reused_only_with_matching_md5(http_server: FileServer, tmp_path):
    url = http_server.add("/a.bin", BODY)
    dest = tmp_path / "a.bin"
    dest.write_bytes(BODY)
    assert download([url], dest, MD5, wait=0) == MD5 and http_server.requests == []
    dest.write_bytes(b"old")
    assert download([url], dest, MD5, wait=0) == MD5 and dest.read_bytes() == BODY
    dest.write_bytes(b"old")
    assert download([url], dest, None, wait=0) == MD5 and dest.read_bytes() == BODY


def test_drive_confirm_page_is_followed(http_server: FileServer, tmp_path):
    # Google Drive's virus-scan interstitial: a GET form whose hidden fields carry the token.
    page = f"""<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
    <form id="download-form" action="{http_server.url('/download')}" method="get">
    <input type="submit" id="uc-download-link" value="Download anyway"/>
    <input type="hidden" name="id" value="FILEID"><input type="hidden" name="export" value="download">
    <input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1"></form>
    </body></html>"""
    first = http_server.add("/uc", page.encode(), content_type="text/html; charset=utf-8")
    http_server.add("/download", BODY)
    assert download([first + "?export=download&id=FILEID"], tmp_path / "sop.zip", MD5, wait=0) == MD5
    assert [p for p, _ in http_server.requests] == ["/uc?export=download&id=FILEID",
                                                    "/download?id=FILEID&export=download&confirm=t&uuid=u-1"]


def test_confirm_link_form_of_the_page():
    page = '<p><a id="uc-download-link" href="/uc?export=download&amp;confirm=AbCd&amp;id=X">Download</a></p>'
    assert confirm_url(page, "https://drive.google.com/uc?id=X") == \
        "https://drive.google.com/uc?export=download&confirm=AbCd&id=X"
    assert confirm_url("<html><body>Quota exceeded</body></html>", "https://x/") is None


def test_html_error_page_is_not_taken_for_the_file(http_server: FileServer, tmp_path):
    quota = http_server.add("/uc", b"<html><body>Too many users have viewed this file</body></html>",
                            content_type="text/html")
    with pytest.raises(PrepareError, match="served an HTML page instead of the file"):
        download([quota], tmp_path / "a.zip", None, wait=0)
    assert not list(tmp_path.iterdir())


def test_kaggle_needs_a_token_hint():
    hint = credentials_hint("https://www.kaggle.com/api/v1/datasets/download/a/b")
    assert hint is not None and "API token" in hint and "--archive" in hint
    assert credentials_hint("https://data.caltech.edu/x.tgz") is None


def test_fetch_local_archive_checks_md5_and_official_flag(tmp_path):
    archive = tmp_path / "mine.tgz"
    archive.write_bytes(BODY)
    got = fetch(tmp_path / "dl" / "x.tgz", urls=[], md5=None, official_md5=MD5, archive=archive)
    assert got.path == archive and got.official
    assert not fetch(tmp_path / "x.tgz", urls=[], md5=None, official_md5="0" * 32, archive=archive).official
    with pytest.raises(PrepareError, match="checksum mismatch"):
        fetch(tmp_path / "x.tgz", urls=[], md5="0" * 32, official_md5=MD5, archive=archive)
    with pytest.raises(FileNotFoundError, match="--archive .*missing.tgz"):
        fetch(tmp_path / "x.tgz", urls=[], md5=None, official_md5=MD5, archive=tmp_path / "missing.tgz")


def test_footprint_counts_rest_of_archive_its_extraction_and_margin():
    from hdml.core.disk import MARGIN
    from hdml.data.datasets.download import Footprint

    size = Footprint(archive=1000, extracted=3000)
    assert size.needed(1000, 0) == 1000 + 3000 + MARGIN  # the published archive
    assert size.needed(None, 0) == 1000 + 3000 + MARGIN  # no Content-Length: the published size
    assert size.needed(200, 50) == 150 + 600 + MARGIN  # a mirror's smaller archive, part of it on disk


@pytest.mark.parametrize("length", [True, False])
def test_too_small_disk_stops_download_before_writing(http_server: FileServer, tmp_path, monkeypatch, length):
    import collections
    import shutil

    from hdml.core.disk import MARGIN, DiskSpaceError
    from hdml.data.datasets.download import Footprint

    url = http_server.add("/a.bin", BODY, length=length)
    size = Footprint(archive=len(BODY) * 2, extracted=len(BODY) * 4)
    # the server's length when it sends one, else the published size
    needed = len(BODY) * 3 + MARGIN if length else len(BODY) * 6 + MARGIN
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, needed - 1))
    dest = tmp_path / "dl" / "a.bin"
    with pytest.raises(DiskSpaceError) as info:
        download([url], dest, MD5, wait=0, footprint=size)
    assert str(info.value).startswith(f"{dest.parent}: downloading and extracting a.bin needs {needed:,} bytes")
    assert f"only {needed - 1:,} bytes" in str(info.value)
    assert list(dest.parent.iterdir()) == [] and len(http_server.requests) == 1  # no retry, nothing written
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, needed))
    assert download([url], dest, MD5, wait=0, footprint=size) == MD5
