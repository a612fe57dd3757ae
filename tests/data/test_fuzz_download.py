"""The downloader against a hostile server on 127.0.0.1: a response cut short, a Content-Length
that is no number, redirects (followed, looping, to file://), HTTP errors whose reason spans
lines, a server that stalls. Each ends in the verified file, or in one DataError line with
nothing half-written left in the data folder; the next run, against a good server, recovers."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from idx_helpers import files_under

from scratchvae.data import DataError, download
from scratchvae.data.download import download_file

PAYLOAD = bytes(range(256)) * 400  # 100 kB
MD5 = hashlib.md5(PAYLOAD).hexdigest()


# Content-Lengths that are no size: "\u00b2" (superscript two, sent as latin-1) is a digit to
# str.isdigit but not to int()
LENGTHS = {"no-number": "abc", "negative": "-5", "superscript": "\u00b2"}


class _Hostile(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _head(self, status: int, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()

    def _close(self) -> None:
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        case = self.path.strip("/")
        if case == "good":
            self._head(200, Content_Length=str(len(PAYLOAD)))
            self.wfile.write(PAYLOAD)
        elif case == "short":  # announces 100 kB, sends 5 kB, closes
            self._head(200, Content_Length=str(len(PAYLOAD)))
            self.wfile.write(PAYLOAD[:5000])
            self._close()
        elif case in LENGTHS:  # http.client takes such a length as unknown
            length = LENGTHS[case]
            self._head(200, Content_Length=length, Connection="close")
            self.wfile.write(PAYLOAD)
            self._close()
        elif case == "redirect":
            self._head(301, Location="/good", Content_Length="0")
        elif case == "loop":
            self._head(302, Location="/loop", Content_Length="0")
        elif case == "to-file":
            self._head(302, Location="file:///etc/passwd", Content_Length="0")
        elif case == "bad-status-line":
            self.wfile.write(b"HELLO\r\nTHERE\r\n\r\n")
            self._close()
        elif case == "trickle":  # announces 100 kB, then sends a byte every 20 ms (50 B/s)
            self._head(200, Content_Length=str(len(PAYLOAD)))
            try:
                for i in range(250):  # 5 s at most
                    self.wfile.write(PAYLOAD[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.02)
            except OSError:  # the client gave up: what the test expects
                self.close_connection = True
        elif case == "stall":  # headers and 10 bytes, then nothing
            self._head(200, Content_Length=str(len(PAYLOAD)))
            self.wfile.write(PAYLOAD[:10])
            self.wfile.flush()
            time.sleep(3)


@pytest.fixture
def hostile() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _refused(url: str, dest, md5: str | None) -> str:
    with pytest.raises(DataError) as err:
        download_file(url, dest, md5, progress=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"could not download {url} ("), message
    assert message.endswith(f"try again, or put the file in {dest.parent} yourself")
    return message


@pytest.mark.parametrize("md5", [None, MD5], ids=["unchecked", "md5"])
def test_a_response_cut_short_is_not_kept(tmp_path, hostile, md5):
    """http.client's read1 ends quietly at a closed connection: without an md5 the first 5 kB
    of 100 kB were kept as the file (with one, the md5 said only "mismatch")."""
    dest = tmp_path / "cache" / "f.gz"
    message = _refused(hostile + "short", dest, md5)
    assert "the connection closed after 5,000 of 102,400 bytes" in message
    assert files_under(tmp_path) == [] and not (tmp_path / "cache").exists()
    assert download_file(hostile + "good", dest, md5, progress=False).read_bytes() == PAYLOAD


@pytest.mark.parametrize("case", list(LENGTHS))
def test_a_content_length_that_is_no_size_is_ignored(tmp_path, hostile, case):
    """Content-Length: abc (and a superscript digit) was int()'s ValueError, a traceback from
    deep inside."""
    dest = tmp_path / "f.gz"
    assert download_file(hostile + case, dest, MD5, progress=True).read_bytes() == PAYLOAD


def test_a_redirect_is_followed_and_the_file_verified(tmp_path, hostile):
    assert download_file(hostile + "redirect", tmp_path / "f", MD5).read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    "case, reason",
    [
        ("loop", "HTTP Error 302: The HTTP server returned a redirect error that would lead to "
         "an infinite loop. The last 30x error message was: Found"),
        ("to-file", "Redirection to url 'file:///etc/passwd' is not allowed"),
        ("bad-status-line", "HELLO"),
    ],
)  # fmt: skip
def test_errors_whose_reason_spans_lines_are_one_line(tmp_path, hostile, case, reason):
    """A redirect loop's reason is three lines: the command line printed only the first
    (cut mid-sentence, without the advice)."""
    message = _refused(hostile + case, tmp_path / "cache" / "f.gz", MD5)
    assert reason in message
    assert files_under(tmp_path) == []


def test_a_stalled_server_times_out_and_leaves_nothing(tmp_path, hostile, monkeypatch):
    monkeypatch.setattr(download, "_TIMEOUT", 0.5)
    start = time.monotonic()
    message = _refused(hostile + "stall", tmp_path / "cache" / "f.gz", MD5)
    assert "(timed out)" in message and time.monotonic() - start < 2.5
    assert files_under(tmp_path) == []


def test_a_trickling_server_fails_by_its_speed_and_leaves_nothing(tmp_path, hostile, monkeypatch):
    """Each read waited at most _TIMEOUT, but a server sending a byte every few seconds held
    a download for ever: under _SPEED_LIMIT bytes/s over _SPEED_TIME seconds it fails."""
    monkeypatch.setattr(download, "_SPEED_TIME", 0.5)
    start = time.monotonic()
    message = _refused(hostile + "trickle", tmp_path / "cache" / "f.gz", MD5)
    assert time.monotonic() - start < 2.5
    assert "(too slow: " in message and "under the 1.0 kB/s a download needs)" in message
    assert files_under(tmp_path) == []
    download_file(hostile + "good", tmp_path / "cache" / "f.gz", MD5, progress=False)  # recovers
    assert files_under(tmp_path) == [tmp_path / "cache" / "f.gz"]


def test_a_fast_download_is_not_refused_by_the_speed_rule(tmp_path, hostile, monkeypatch):
    monkeypatch.setattr(download, "_SPEED_TIME", 0.0)  # checked at every read
    assert download_file(hostile + "good", tmp_path / "f.gz", MD5, progress=False).exists()


@pytest.mark.parametrize("progress", [None, False])
def test_a_download_says_what_it_fetches_when_stderr_is_no_terminal(
    tmp_path, hostile, capsys, progress
):
    """Progress showed as a bar on a terminal only: in a log nothing said a download (minutes
    of MNIST) was under way. Plain lines instead, unless asked for no progress at all."""
    download_file(hostile + "good", tmp_path / "f.gz", MD5, progress=progress)
    out, err = capsys.readouterr()
    assert out == "" and "\r" not in err
    if progress is False:
        assert err == ""
        return
    first, last = err.splitlines()
    assert first == f"downloading {hostile}good (102.4 kB) ..."
    assert last.startswith("downloaded f.gz (102.4 kB in ") and last.endswith(" s)")


def test_on_a_terminal_a_download_shows_its_bar_and_no_lines(
    tmp_path, hostile, capsys, monkeypatch
):
    monkeypatch.setattr(download, "is_terminal", lambda stream: True)
    download_file(hostile + "good", tmp_path / "f.gz", MD5)
    err = capsys.readouterr().err
    assert "downloading " not in err and "downloaded " not in err
