"""Cluster DNS as users meet it: real dig and nslookup, from the host and from inside pods."""
from __future__ import annotations

import asyncio
import os
import socketserver
import threading
from pathlib import Path

import pytest
from dnslib import QTYPE, RR, A, DNSRecord

FIXTURES = Path(__file__).parent / "fixtures" / "manifests"
EXAMPLES = Path(__file__).parent.parent / "examples"

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="port 53 and per-pod resolv.conf need root")


async def run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode, out.decode()


async def dig(cluster, *args: str) -> str:
    code, out = await run("dig", f"@{cluster.config.dns_ip}", "-p", str(cluster.dns_port), "+time=2", "+tries=1",
                          *args)
    assert code == 0, out
    return out


MY_NS = """
apiVersion: v1
kind: Namespace
metadata: {name: my-ns}
"""


@pytest.fixture
async def walkthrough(make_cluster):
    cluster = await make_cluster(nodes=2)
    await cluster.apply(MY_NS)
    await cluster.apply((FIXTURES / "walkthrough-multi-port-service.yaml").read_text(), namespace="my-ns")
    await cluster.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n")
    await cluster.apply(FIXTURES / "walkthrough-externalname-service.yaml")
    await cluster.apply(EXAMPLES / "my-nginx-deployment.yaml", EXAMPLES / "my-nginx-service.yaml",
                        EXAMPLES / "curl-pod.yaml")
    await cluster.wait_ready(timeout=20)
    return cluster


async def test_service_name_in_another_namespace(walkthrough):
    ip = walkthrough.service_ip("my-service", "my-ns")
    out = await dig(walkthrough, "+short", "my-service.my-ns.svc.cluster.local")
    assert out.split() == [ip]


@pytest.mark.parametrize("port_name, port", [("http", 80), ("https", 443)])
async def test_srv_for_named_ports(walkthrough, port_name, port):
    out = await dig(walkthrough, "+short", "SRV", f"_{port_name}._tcp.my-service.my-ns.svc.cluster.local")
    assert out.split() == ["0", "100", str(port), "my-service.my-ns.svc.cluster.local."]


async def test_external_name_is_a_cname(walkthrough):
    out = await dig(walkthrough, "+noall", "+answer", "CNAME", "my-service.prod.svc.cluster.local")
    assert out.split() == ["my-service.prod.svc.cluster.local.", "5", "IN", "CNAME", "my.database.example.com."]


async def test_unknown_name_is_nxdomain_with_the_zone_soa(walkthrough):
    out = await dig(walkthrough, "nope.default.svc.cluster.local")
    assert "status: NXDOMAIN" in out and "flags: qr aa" in out
    assert "cluster.local.\t\t5\tIN\tSOA\tns.dns.cluster.local. hostmaster.cluster.local." in out


async def test_names_outside_the_cluster_are_refused_without_an_upstream(walkthrough):
    out = await dig(walkthrough, "example.com")
    assert "status: REFUSED" in out


@root_only
async def test_nslookup_from_the_host(walkthrough):
    code, out = await run("nslookup", "my-nginx.default.svc.cluster.local", walkthrough.config.dns_ip)
    assert code == 0, out
    assert f"Address: {walkthrough.service_ip('my-nginx')}" in out


@root_only
async def test_nslookup_and_curl_by_short_name_inside_a_pod(walkthrough):
    result = await walkthrough.exec("curl", ["nslookup", "my-nginx"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Name:\tmy-nginx.default.svc.cluster.local" in result.stdout
    assert f"Address: {walkthrough.service_ip('my-nginx')}" in result.stdout
    result = await walkthrough.exec("curl", ["curl", "-sS", "--max-time", "5", "http://my-nginx/"])
    assert result.returncode == 0, result.stderr
    assert "Welcome to nginx!" in result.stdout


@root_only
async def test_pod_sees_its_resolv_conf_and_hostname(walkthrough):
    resolv = (await walkthrough.exec("curl", ["cat", "/etc/resolv.conf"])).stdout
    assert resolv == ("search default.svc.cluster.local svc.cluster.local cluster.local\n"
                      f"nameserver {walkthrough.config.dns_ip}\noptions ndots:5\n")
    assert (await walkthrough.exec("curl", ["hostname"])).stdout == "curl\n"


@root_only
async def test_dns_example_pod_resolv_conf_is_read_never_used(make_cluster):
    # The walkthrough's dns-example names 1.2.3.4, a real public address: read the file, run no resolver.
    cluster = await make_cluster()
    await cluster.apply(FIXTURES / "walkthrough-dns-example-pod.yaml")
    await cluster.wait_ready(timeout=20)
    result = await cluster.exec("dns-example", ["cat", "/etc/resolv.conf"])
    assert result.stdout == ("search ns1.svc.cluster-domain.example my.dns.search.suffix\n"
                             "nameserver 1.2.3.4\n"
                             "options ndots:2 edns0\n")


async def test_records_follow_readiness_and_deletion(walkthrough):
    await walkthrough.apply("""
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {run: my-nginx}
  ports: [{name: http, port: 80}]
""")
    pods = sorted(p.status.pod_ip for p in walkthrough.pods(selector={"run": "my-nginx"}))
    assert sorted((await dig(walkthrough, "+short", "web.default.svc.cluster.local")).split()) == pods
    victim = walkthrough.pods(selector={"run": "my-nginx"})[0]
    await walkthrough.delete("pod", victim.metadata.name)

    def withdrawn() -> bool:
        return all(victim.status.pod_ip not in e.addresses or not e.conditions.ready
                   for s in walkthrough.list("endpointslice", "default") for e in s.endpoints)
    await walkthrough.wait_for(withdrawn, 10, "the endpoint to be withdrawn")
    out = (await dig(walkthrough, "+short", "web.default.svc.cluster.local")).split()
    assert victim.status.pod_ip not in out  # (its replacement may already be listed)


class _StubUpstream(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        query = DNSRecord.parse(data)
        reply = query.reply()
        if query.q.qtype == QTYPE.A:
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("127.0.0.99"), ttl=60))
        sock.sendto(reply.pack(), self.client_address)


async def test_forwarding_to_a_configured_upstream(make_cluster):
    server = socketserver.UDPServer(("127.53.9.9", 0), _StubUpstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cluster = await make_cluster(dns_upstreams=(f"127.53.9.9:{server.server_address[1]}",))
        await cluster.wait_ready(timeout=20)
        out = await dig(cluster, "+short", "example.com")
        assert out.split() == ["127.0.0.99"]
    finally:
        server.shutdown()
        server.server_close()
