"""An asyncio server traced live, as a new user would (issue 14's tryout):
``fentry attach PID -e ... --hist ...`` while clients hammer it, and the
hist printed when the session ends."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest
from helpers import env

SERVER = """
    import asyncio
    async def handle_request(path):
        await asyncio.sleep(0)
        return f"ok {path}\\n"
    async def client_conn(reader, writer):
        while line := await reader.readline():
            writer.write((await handle_request(line.decode().strip())).encode())
            await writer.drain()
        writer.close()
    async def main():
        srv = await asyncio.start_server(client_conn, "127.0.0.1", 0)
        print("ready", srv.sockets[0].getsockname()[1], flush=True)
        async with srv:
            await srv.serve_forever()
    asyncio.run(main())
"""


def hammer(port: int, clients: int, requests: int) -> None:
    def run(c: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as s, s.makefile("rwb") as f:
            for i in range(requests):
                f.write(f"/c{c}/{i % 3}\n".encode())
                f.flush()
                assert f.readline() == f"ok /c{c}/{i % 3}\n".encode()
    ts = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


@pytest.mark.ptrace
def test_attach_hist_counts_each_request_of_a_live_asyncio_server(tmp_path):
    """``fentry attach PID --hist`` was refused (the option was run's and
    record's only); now the session's hist, keyed on the request path,
    prints when it ends, each count the requests made."""
    server = tmp_path / "server.py"
    server.write_text(textwrap.dedent(SERVER))
    target = subprocess.Popen([sys.executable, str(server)], stdout=subprocess.PIPE, text=True)
    first = target.stdout.readline()
    assert first.startswith("ready"), first
    port = int(first.split()[1])
    attach = subprocess.Popen(
        [sys.executable, "-m", "fentry", "attach", str(target.pid), "-t", "nop",
         "-e", "p:srv/req __main__:handle_request path=path", "--hist", "srv/req:keys=path"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        status = attach.stderr.readline()
        assert status.startswith("fentry: attached to"), status + attach.stderr.read()
        hammer(port, 4, 600)
        attach.send_signal(signal.SIGINT)
        out, err = attach.communicate(timeout=60)
    finally:
        attach.kill()
        target.kill()
        target.wait()
    assert attach.returncode == 0, err
    hist = out[out.index("# events/srv/req/hist"):]
    rows = dict(re.findall(r"^\{ path: (\S+) +\} hitcount: +(\d+)$", hist, flags=re.M))
    assert rows == {f"/c{c}/{k}": "200" for c in range(4) for k in range(3)}
    assert re.search(r"^    Hits: 2400$", hist, flags=re.M)
