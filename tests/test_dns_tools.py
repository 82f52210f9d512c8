"""The real `dig` and `nslookup` against netemu's DNS server on 127.53.x.y.

The server runs on the test's event loop, so the tools run as asyncio subprocesses.
"""
from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from netemu.dns import ClusterDNS
from netemu.errors import DNSError

from test_dns_helpers import BIG_ENDPOINTS, config, fill, free_loopback, running

pytestmark = pytest.mark.skipif(not (shutil.which("dig") and shutil.which("nslookup")),
                                reason="dig and nslookup (bind9-dnsutils) are not installed")


async def run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode or 0, out.decode()


def dig(server: ClusterDNS, *args: str) -> list[str]:
    return ["dig", f"@{server.host}", "-p", str(server.port), "+time=2", "+tries=1", *args]


@pytest.mark.parametrize("args,expected", [
    (["+short", "my-service.default.svc.cluster.local"], ["10.96.0.11"]),
    (["+short", "+tcp", "my-service.default.svc.cluster.local"], ["10.96.0.11"]),
    (["+short", "SRV", "_https._tcp.my-service.default.svc.cluster.local"],
     ["0 100 443 my-service.default.svc.cluster.local."]),
    (["+short", "-x", "10.96.0.20"], ["my-nginx.default.svc.cluster.local."]),
    (["+short", "hdls.default.svc.cluster.local"], ["10.244.1.10", "10.244.1.11"]),
    (["+short", "web-0.hdls.default.svc.cluster.local"], ["10.244.1.10"]),
    (["+short", "10-244-1-5.default.pod.cluster.local"], ["10.244.1.5"]),
    (["+short", "my-service.prod.svc.cluster.local"], ["my.database.example.com."]),
    (["+short", "TXT", "dns-version.cluster.local"], ['"1.1.0"']),
    # dig retries over TCP when the UDP answer is truncated
    (["+short", "big.default.svc.cluster.local"], sorted(ip for ip, _, _ in BIG_ENDPOINTS)),
], ids=["a", "a-tcp", "srv", "ptr", "headless", "endpoint", "pod", "external-name", "dns-version", "tc-retry"])
async def test_dig(args: list[str], expected: list[str]) -> None:
    async with running() as server:
        code, out = await run(*dig(server, *args))
        assert code == 0, out
        assert sorted(out.split("\n")[:-1]) == sorted(expected)


async def test_dig_shows_status_flags_and_authority() -> None:
    async with running() as server:
        code, out = await run(*dig(server, "nope.default.svc.cluster.local"))
        assert code == 0, out
        assert "status: NXDOMAIN" in out
        assert "flags: qr aa rd;" in out
        assert "cluster.local.\t\t5\tIN\tSOA\tns.dns.cluster.local. hostmaster.cluster.local." in out


async def test_nslookup_with_a_search_domain_as_in_the_walkthrough() -> None:
    async with running() as server:
        code, out = await run("nslookup", f"-port={server.port}", "-domain=default.svc.cluster.local",
                              "my-nginx", server.host)
        assert code == 0, out
        assert "Name:\tmy-nginx.default.svc.cluster.local\nAddress: 10.96.0.20" in out
        code, out = await run("nslookup", f"-port={server.port}", "nope.default.svc.cluster.local", server.host)
        assert code == 1 and "NXDOMAIN" in out


async def test_nslookup_on_port_53() -> None:
    if os.geteuid() != 0:
        pytest.skip("binding port 53 needs root")
    server = ClusterDNS(config())
    fill(server)
    try:
        await server.start(host=free_loopback(), port=53)
    except DNSError as exc:
        pytest.skip(f"port 53 is not available: {exc}")
    try:
        code, out = await run("nslookup", "my-nginx.default.svc.cluster.local", server.host)
        assert code == 0, out
        assert f"Server:\t\t{server.host}\nAddress:\t{server.host}#53" in out
        assert "Name:\tmy-nginx.default.svc.cluster.local\nAddress: 10.96.0.20" in out
    finally:
        await server.close()
