"""Test helper (put this folder on PYTHONPATH): record every outgoing network connection attempt.

Each attempt to connect an IP socket (or resolve a host name) is appended, with the process's
command line, to the file named by ``$ATTENDOME_SOCKET_LOG`` and then allowed to proceed, so a test
can assert that a whole ``dvc repro`` made none. Unix-domain sockets are local and not recorded.
"""

import os
import socket
import sys

_LOG = os.environ.get("ATTENDOME_SOCKET_LOG")


def _record(what: str) -> None:
    with open(_LOG, "a") as f:
        f.write(f"{what}\t{' '.join(sys.argv)[:200]}\n")


if _LOG:
    _connect = socket.socket.connect
    _connect_ex = socket.socket.connect_ex
    _getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _record(f"connect {address}")
        return _connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _record(f"connect_ex {address}")
        return _connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost", "127.0.0.1", "::1", ""):
            _record(f"getaddrinfo {host}")
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo
