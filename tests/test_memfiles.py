"""Memory files: a path that opens secrets without their ever being on disk, gone when closed."""
from __future__ import annotations

import os
import ssl
import subprocess
import sys

import pytest

from netemu.memfiles import memory_file, memory_path, path_of


def test_a_memory_path_reads_back_its_data_and_is_gone_after_the_block():
    data = os.urandom(200_000)   # more than one write may take
    with memory_path("netemu-test", data) as path:
        with open(path, "rb") as f:
            assert f.read() == data
        assert os.readlink(path) == "/memfd:netemu-test (deleted)"
    with pytest.raises(FileNotFoundError):
        open(path, "rb")


def test_ssl_loads_a_certificate_chain_from_memory_paths():
    from netemu.ingress.tls import fake_certificate
    cert, key = fake_certificate()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with memory_path("c", cert) as cert_path, memory_path("k", key) as key_path:
        context.load_cert_chain(cert_path, key_path)


def test_a_memory_file_is_not_inherited_by_programs_started_later():
    fd = memory_file("netemu-test", b"secret")
    try:
        child = subprocess.run([sys.executable, "-c", f"open({path_of(fd)!r}).read()"], close_fds=False,
                               capture_output=True, text=True)
        assert child.returncode == 1 and "FileNotFoundError" in child.stderr
    finally:
        os.close(fd)
