"""``fentry view``: a trace in speedscope, the real viewer, served on 127.0.0.1.

The viewer is speedscope's release (its npm package's ``dist/release``: an
``index.html`` and the files it loads), installed beside fentry by
``scripts/install-viewer`` (``viewer/node_modules/``), or wherever
``--viewer DIR`` or ``$FENTRY_VIEWER`` say.  Nothing is fetched from
elsewhere: it works offline.  A recording (``fentry.dat``) is converted to
speedscope's format first; any other file (a speedscope, Chrome or folded
export, or whatever else speedscope opens) is served as it is.  The server
is the standard library's, on a free port of 127.0.0.1, and serves only the
viewer's files and the trace, until Ctrl-C.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import tempfile
import threading
import urllib.parse

from .datfile import MAGIC

ENV_VIEWER = "FENTRY_VIEWER"
PROFILE_PATH = "/trace/"        # the trace is served under this path, by its own name
_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.dirname(_HERE)))


class ViewerMissing(Exception):
    pass


def viewer_candidates(explicit: str | None = None) -> list[str]:
    """Where speedscope's release may be, in the order they are tried."""
    out = []
    if explicit:
        out.append(explicit)
    elif os.environ.get(ENV_VIEWER):
        out.append(os.environ[ENV_VIEWER])
    else:
        out.append(os.path.join(_SOURCE_TREE, "viewer", "node_modules", "speedscope"))
        for prefix in (os.environ.get("npm_config_prefix"),  # noqa: SIM112 (npm spells it so) "/usr/local", "/usr",
                       os.path.expanduser("~/.npm-global")):
            if prefix:
                out.append(os.path.join(prefix, "lib", "node_modules", "speedscope"))
    return out


def find_viewer(explicit: str | None = None) -> str:
    """speedscope's release directory (with its ``index.html``)."""
    tried = viewer_candidates(explicit)
    for path in tried:
        for d in (path, os.path.join(path, "dist", "release")):
            if os.path.isfile(os.path.join(d, "index.html")):
                return d
    where = ", ".join(tried)
    raise ViewerMissing(
        f"speedscope's viewer files are not installed (looked in {where}).  In fentry's "
        "source tree, scripts/install-viewer installs them (npm's speedscope package, into "
        "viewer/node_modules); `npm install -g speedscope` does too; or point "
        f"${ENV_VIEWER} (or --viewer) at a speedscope release directory")


def schema_path(explicit: str | None = None) -> str:
    """speedscope's ``file-format-schema.json``, from the viewer's files."""
    return os.path.join(find_viewer(explicit), "file-format-schema.json")


def is_recording(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


class _Handler(http.server.SimpleHTTPRequestHandler):
    """The viewer's files, and the trace at PROFILE_PATH + its name."""
    server: ViewServer

    def translate_path(self, path: str) -> str:
        if urllib.parse.urlsplit(path).path == self.server.profile_url:
            return self.server.profile
        return super().translate_path(path)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class ViewServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, viewer: str, profile: str, name: str, port: int = 0) -> None:
        self.viewer = viewer
        self.profile = profile
        self.profile_url = PROFILE_PATH + urllib.parse.quote(name)
        super().__init__(("127.0.0.1", port), functools.partial(_Handler, directory=viewer))

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if isinstance(host, bytes):         # (an AF_UNIX address; never here)
            host = host.decode()
        # (No "title": speedscope would give it to every profile, in place of the threads' names.)
        return f"http://{host}:{port}/#profileURL={urllib.parse.quote(self.profile_url, safe='')}"


def export_speedscope(recording: str, out_path: str) -> list[str]:
    """Convert a recording to speedscope's format; what ``fentry report`` would say about it."""

    from .datfile import DatReader
    from .decode import read_recording
    from .speedscope import SpeedscopeReport
    reader = DatReader(recording)
    notes = []
    with open(out_path, "wb") as out:
        sink = SpeedscopeReport(out, os.path.basename(recording))
        try:
            read_recording(reader, sink)
        finally:
            reader.close()
    if sink.error is not None:
        raise OSError(f"writing {out_path} failed: {sink.error}")
    if reader.cut:
        notes.append(f"{recording} was cut {reader.cut} bytes into a frame: the trace stops "
                     "at the last whole frame")
    return notes + sink.notes


class View:
    """A served trace: ``url``; ``serve_forever()`` (or ``start()`` and ``stop()``)."""

    def __init__(self, path: str, viewer: str | None = None, port: int = 0) -> None:
        self.viewer = find_viewer(viewer)
        self.tmp = None
        self.notes: list[str] = []
        name = os.path.basename(path)
        if is_recording(path):
            self.tmp = tempfile.mkdtemp(prefix="fentry-view-")
            name = os.path.splitext(name)[0] + ".speedscope.json"
            profile = os.path.join(self.tmp, name)
            try:
                self.notes = export_speedscope(path, profile)
            except BaseException:
                self.close()
                raise
        else:
            profile = os.path.abspath(path)
        self.server = ViewServer(self.viewer, profile, name, port)
        self.url = self.server.url
        self.thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self.close()

    def start(self) -> None:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        if self.thread is not None:
            self.thread.join()
        self.close()

    def close(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            server.server_close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
