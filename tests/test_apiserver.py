"""The API server's write path: apply (all or nothing), Service allocation, delete, scale, bootstrap."""
from __future__ import annotations

import dataclasses
import random

import pytest

from netemu.api import load_text
from netemu.apiserver import ApiServer
from netemu.errors import InvalidError, ManifestErrors, NotFoundError
from netemu.store import Store

# --------------------------------------------------------------------------- walkthrough manifests

SINGLE_PORT = """\
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
"""

MULTI_PORT = """\
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app: MyApp
  ports:
    - name: http
      protocol: TCP
      port: 80
      targetPort: 9376
    - name: https
      protocol: TCP
      port: 443
      targetPort: 9377
"""

# The walkthrough prints `nodePort: 30007` one level too far left (a YAML error); this is the
# kubernetes.io original, with the field inside the port.
NODE_PORT = """\
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  type: NodePort
  selector:
    app.kubernetes.io/name: MyApp
  ports:
    - port: 80
      targetPort: 80
      nodePort: 30007
"""

LOAD_BALANCER = """\
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
  clusterIP: 10.0.171.239
  type: LoadBalancer
status:
  loadBalancer:
    ingress:
      - ip: 192.0.2.127
"""

EXTERNAL_NAME = """\
apiVersion: v1
kind: Service
metadata:
  name: my-service
  namespace: prod
spec:
  type: ExternalName
  externalName: my.database.example.com
"""

PROD_NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: prod
"""

DNS_EXAMPLE = """\
apiVersion: v1
kind: Pod
metadata:
  namespace: default
  name: dns-example
spec:
  containers:
    - name: test
      image: nginx
  dnsPolicy: "None"
  dnsConfig:
    nameservers:
      - 1.2.3.4
    searches:
      - ns1.svc.cluster-domain.example
      - my.dns.search.suffix
    options:
      - name: ndots
        value: "2"
      - name: edns0
"""

NGINX_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-nginx
spec:
  selector:
    matchLabels:
      run: my-nginx
  replicas: 2
  template:
    metadata:
      labels:
        run: my-nginx
    spec:
      containers:
        - name: my-nginx
          image: nginx
          ports:
            - containerPort: 80
"""

NGINX_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: my-nginx
  labels:
    run: my-nginx
spec:
  ports:
    - port: 80
      protocol: TCP
  selector:
    run: my-nginx
"""

SERVICE_CIDR = "10.96.0.0/12"


def docs(*texts: str) -> list:
    return load_text("---\n".join(texts))


def new_server(service_cidr: str = SERVICE_CIDR, node_port_range: str = "30000-32767") -> ApiServer:
    server = ApiServer(Store(), service_cidr=service_cidr, node_port_range=node_port_range,
                       rng=random.Random(7))
    server.bootstrap()
    return server


@pytest.fixture
def api() -> ApiServer:
    return new_server()


def svc(api: ApiServer, name: str, namespace: str = "default"):
    return api.store.must_get("Service", namespace, name)


def state(api: ApiServer) -> tuple:
    """Everything a failed batch must leave untouched."""
    store = api.store
    objects = {kind: [(o.metadata.namespace, o.metadata.name, o.metadata.resource_version)
                      for o in store.list(kind)]
               for kind in ("Namespace", "Pod", "Service", "Deployment", "EndpointSlice")}
    return store.resource_version, objects, api.cluster_ips.snapshot(), api.node_ports.snapshot()


def problems(err: ManifestErrors) -> list[list[str]]:
    return [[str(p) for p in e.problems] for e in err.errors]


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap(api):
    assert [ns.metadata.name for ns in api.store.list("Namespace")] == [
        "default", "kube-node-lease", "kube-public", "kube-system"]
    kubernetes = svc(api, "kubernetes")
    assert (kubernetes.spec.cluster_ip, kubernetes.spec.selector) == ("10.96.0.1", None)
    (port,) = kubernetes.spec.ports
    assert (port.name, port.protocol, port.port, port.target_port) == ("https", "TCP", 443, 6443)
    assert api.dns_ip == "10.96.0.10"
    assert api.cluster_ips.snapshot()["reserved"] == {"kube-system/kube-dns": "10.96.0.10"}
    rv = api.store.resource_version
    assert api.bootstrap() == ["namespace/default unchanged", "namespace/kube-system unchanged",
                               "namespace/kube-public unchanged", "namespace/kube-node-lease unchanged",
                               "service/kubernetes unchanged"]
    assert api.store.resource_version == rv


def test_cluster_dns_ip_is_kept_for_kube_dns(api):
    thief = NGINX_SERVICE.replace("  ports:", "  clusterIP: 10.96.0.10\n  ports:")
    with pytest.raises(ManifestErrors) as err:
        api.apply(docs(thief))
    assert problems(err.value) == [[
        'spec.clusterIPs: Invalid value: ["10.96.0.10"]: failed to allocate IP 10.96.0.10: '
        "provided IP is already allocated"]]
    kube_dns = NGINX_SERVICE.replace("name: my-nginx\n  labels", "name: kube-dns\n  namespace: kube-system\n  labels")
    assert api.apply(docs(kube_dns)) == ["service/kube-dns created"]
    assert svc(api, "kube-dns", "kube-system").spec.cluster_ip == "10.96.0.10"


# --------------------------------------------------------------------------- walkthrough manifests


@pytest.mark.parametrize("texts, lines", [
    ([SINGLE_PORT], ["service/my-service created"]),
    ([MULTI_PORT], ["service/my-service created"]),
    ([NODE_PORT], ["service/my-service created"]),
    ([PROD_NAMESPACE, EXTERNAL_NAME], ["namespace/prod created", "service/my-service created"]),
    ([DNS_EXAMPLE], ["pod/dns-example created"]),
    ([NGINX_DEPLOYMENT, NGINX_SERVICE], ["deployment.apps/my-nginx created", "service/my-nginx created"]),
], ids=["single-port", "multi-port", "node-port", "external-name", "dns-example", "nginx"])
def test_walkthrough_manifests_apply(api, texts, lines):
    assert api.apply(docs(*texts)) == lines
    assert api.apply(docs(*texts)) == [line.replace("created", "unchanged") for line in lines]


def test_walkthrough_load_balancer_refused_outside_service_range(api):
    before = state(api)
    with pytest.raises(ManifestErrors) as err:
        api.apply(docs(LOAD_BALANCER))
    expected = ('spec.clusterIPs: Invalid value: ["10.0.171.239"]: failed to allocate IP 10.0.171.239: '
                "the provided IP (10.0.171.239) is not in the valid range. The range of valid IPs is 10.96.0.0/12")
    assert problems(err.value) == [[expected]]
    assert str(err.value).endswith("Service default/my-service: " + expected)
    assert state(api) == before


def test_walkthrough_load_balancer_accepted_when_range_holds_it():
    api = new_server("10.0.0.0/16")
    assert api.apply(docs(LOAD_BALANCER)) == ["service/my-service created"]
    created = svc(api, "my-service")
    assert created.spec.cluster_ip == "10.0.171.239"
    assert created.spec.cluster_ips == ("10.0.171.239",)
    assert created.status.load_balancer.ingress == ()  # status in a manifest is ignored on create
    (port,) = created.spec.ports
    assert 30086 <= port.node_port <= 32767
    assert api.node_ports.ports_of("default/my-service") == [port.node_port]


def test_external_name_gets_no_cluster_ip_and_no_ports(api):
    api.apply(docs(PROD_NAMESPACE, EXTERNAL_NAME))
    created = svc(api, "my-service", "prod")
    assert (created.spec.cluster_ip, created.spec.cluster_ips) == ("", ())
    assert api.cluster_ips.ip_of("prod/my-service") is None


def test_headless_gets_no_cluster_ip(api):
    headless = SINGLE_PORT.replace("  selector:", "  clusterIP: None\n  selector:")
    api.apply(docs(headless))
    assert svc(api, "my-service").spec.cluster_ip == "None"
    assert api.cluster_ips.ip_of("default/my-service") is None


def test_automatic_cluster_ip_from_upper_band(api):
    api.apply(docs(SINGLE_PORT))
    ip = svc(api, "my-service").spec.cluster_ip
    assert api.cluster_ips.owner_of(ip) == "default/my-service"
    assert ip not in ("10.96.0.1", "10.96.0.10")
    assert not ip.startswith("10.96.0.")  # the static band 10.96.0.1-10.96.1.0 is for explicit IPs


# --------------------------------------------------------------------------- node ports


def test_node_port_honoured_then_refused_for_another_service(api):
    assert api.apply(docs(NODE_PORT)) == ["service/my-service created"]
    assert svc(api, "my-service").spec.ports[0].node_port == 30007
    other = NODE_PORT.replace("name: my-service", "name: other")
    with pytest.raises(ManifestErrors) as err:
        api.apply(docs(other))
    assert problems(err.value) == [["spec.ports[0].nodePort: Invalid value: 30007: provided port is already allocated"]]


def test_node_port_outside_range(api):
    with pytest.raises(ManifestErrors) as err:
        api.apply(docs(NODE_PORT.replace("30007", "8080")))
    assert problems(err.value) == [[
        "spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. "
        "The range of valid ports is 30000-32767"]]


def test_automatic_node_ports_in_dynamic_band(api):
    multi = MULTI_PORT.replace("spec:\n", "spec:\n  type: NodePort\n")
    api.apply(docs(multi))
    node_ports = [p.node_port for p in svc(api, "my-service").spec.ports]
    assert len(set(node_ports)) == 2
    assert all(30086 <= p <= 32767 for p in node_ports)
    assert api.node_ports.ports_of("default/my-service") == sorted(node_ports)


DNS_LIKE = """\
apiVersion: v1
kind: Service
metadata:
  name: dns
spec:
  type: NodePort
  selector:
    app: dns
  ports:
    - name: dns
      protocol: UDP
      port: 53
    - name: dns-tcp
      protocol: TCP
      port: 53
"""


def test_tcp_and_udp_of_one_service_share_a_node_port(api):
    api.apply(docs(DNS_LIKE))
    udp, tcp = svc(api, "dns").spec.ports
    assert udp.node_port == tcp.node_port
    assert api.node_ports.ports_of("default/dns") == [udp.node_port]
    assert api.apply(docs(DNS_LIKE)) == ["service/dns unchanged"]


def test_explicit_shared_node_port_for_tcp_and_udp(api):
    text = DNS_LIKE.replace("      port: 53\n", "      port: 53\n      nodePort: 30053\n")
    api.apply(docs(text))
    assert [p.node_port for p in svc(api, "dns").spec.ports] == [30053, 30053]


def test_load_balancer_without_node_ports(api):
    text = SINGLE_PORT.replace("spec:\n", "spec:\n  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n")
    api.apply(docs(text))
    assert svc(api, "my-service").spec.ports[0].node_port is None
    assert api.node_ports.snapshot() == {}


def test_health_check_node_port_for_local_load_balancer(api):
    text = SINGLE_PORT.replace("spec:\n", "spec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n")
    api.apply(docs(text))
    created = svc(api, "my-service")
    hc = created.spec.health_check_node_port
    assert hc and 30086 <= hc <= 32767 and hc != created.spec.ports[0].node_port
    assert api.node_ports.ports_of("default/my-service") == sorted([hc, created.spec.ports[0].node_port])
    api.apply(docs(text.replace("Local", "Cluster")))
    assert svc(api, "my-service").spec.health_check_node_port is None
    assert api.node_ports.owner_of(hc) is None


# --------------------------------------------------------------------------- all or nothing


def test_failed_batch_leaves_store_and_allocators_untouched(api):
    api.apply(docs(NODE_PORT))
    before = state(api)
    clash = NODE_PORT.replace("name: my-service", "name: clash")
    with pytest.raises(ManifestErrors) as err:
        api.apply(docs(PROD_NAMESPACE, NGINX_DEPLOYMENT, NGINX_SERVICE, clash, EXTERNAL_NAME))
    assert [e.ref.name for e in err.value.errors] == ["clash"]
    assert state(api) == before


def test_failed_batch_reports_every_failing_object(api):
    with pytest.raises(ManifestErrors) as err:
        api.apply(docs(NGINX_SERVICE, EXTERNAL_NAME, LOAD_BALANCER))
    assert [(e.ref.kind, e.ref.namespace, e.ref.name) for e in err.value.errors] == [
        ("Service", "prod", "my-service"), ("Service", "default", "my-service")]
    assert problems(err.value)[0] == ['namespaces "prod" not found']
    assert api.store.get("Service", "default", "my-nginx") is None
    assert api.cluster_ips.ip_of("default/my-nginx") is None


def test_failed_object_does_not_block_later_ones_in_the_batch(api):
    # The first service fails after claiming 30007 in the plan; its claim is undone at once, so the
    # second one is judged on its own (and the batch still fails as a whole).
    bad = NODE_PORT.replace("  ports:", "  clusterIP: 10.0.0.1\n  ports:")
    other = NODE_PORT.replace("name: my-service", "name: other")
    with pytest.raises(ManifestErrors) as err:
        api.apply(docs(bad, other))
    assert [e.ref.name for e in err.value.errors] == ["my-service"]


def test_namespace_not_found(api):
    with pytest.raises(ManifestErrors) as err:
        api.apply(docs(EXTERNAL_NAME))
    assert problems(err.value) == [['namespaces "prod" not found']]
    assert "Service prod/my-service" in str(err.value)


def test_node_manifests_refused(api):
    node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: worker-1\n"
    with pytest.raises(ManifestErrors) as err:
        api.apply(docs(node))
    assert "nodes are made by the cluster" in str(err.value)


# --------------------------------------------------------------------------- updates


def test_update_keeps_cluster_ip_and_node_ports(api):
    auto = NODE_PORT.replace("      nodePort: 30007\n", "")
    api.apply(docs(auto))
    first = svc(api, "my-service")
    assert api.apply(docs(auto)) == ["service/my-service unchanged"]
    relabelled = auto.replace("name: my-service", "name: my-service\n  labels:\n    tier: web")
    assert api.apply(docs(relabelled)) == ["service/my-service configured"]
    second = svc(api, "my-service")
    assert second.spec.cluster_ip == first.spec.cluster_ip
    assert second.spec.ports[0].node_port == first.spec.ports[0].node_port
    assert second.metadata.uid == first.metadata.uid
    assert api.node_ports.ports_of("default/my-service") == [first.spec.ports[0].node_port]


def test_update_changes_explicit_node_port(api):
    api.apply(docs(NODE_PORT))
    api.apply(docs(NODE_PORT.replace("30007", "30008")))
    assert api.node_ports.snapshot() == {30008: "default/my-service"}


def test_type_change_load_balancer_to_cluster_ip_frees_node_ports(api):
    lb = SINGLE_PORT.replace("spec:\n", "spec:\n  type: LoadBalancer\n")
    api.apply(docs(lb))
    ip = svc(api, "my-service").spec.cluster_ip
    assert len(api.node_ports.ports_of("default/my-service")) == 1
    assert api.apply(docs(SINGLE_PORT)) == ["service/my-service configured"]
    changed = svc(api, "my-service")
    assert changed.spec.type == "ClusterIP"
    assert changed.spec.ports[0].node_port is None
    assert changed.spec.cluster_ip == ip
    assert api.node_ports.ports_of("default/my-service") == []


def test_type_change_cluster_ip_to_external_name_frees_the_ip(api):
    api.apply(docs(SINGLE_PORT))
    ip = svc(api, "my-service").spec.cluster_ip
    external = EXTERNAL_NAME.replace("  namespace: prod\n", "")
    api.apply(docs(external))
    assert svc(api, "my-service").spec.cluster_ip == ""
    assert api.cluster_ips.owner_of(ip) is None
    api.apply(docs(SINGLE_PORT))  # and back: a new IP
    assert api.cluster_ips.ip_of("default/my-service") == svc(api, "my-service").spec.cluster_ip


def test_update_keeps_status(api):
    api.apply(docs(NGINX_DEPLOYMENT))
    live = api.store.must_get("Deployment", "default", "my-nginx")
    api.store.update(dataclasses.replace(live, status=dataclasses.replace(live.status, replicas=2, ready_replicas=2)))
    assert api.apply(docs(NGINX_DEPLOYMENT.replace("replicas: 2", "replicas: 3"))) == [
        "deployment.apps/my-nginx configured"]
    updated = api.store.must_get("Deployment", "default", "my-nginx")
    assert (updated.spec.replicas, updated.status.ready_replicas) == (3, 2)
    assert updated.metadata.generation == 2


def test_reapply_keeps_labels_and_annotations_others_added(api):
    labelled = NGINX_DEPLOYMENT.replace("name: my-nginx\nspec", "name: my-nginx\n  labels:\n    tier: web\nspec")
    api.apply(docs(labelled))
    live = api.store.must_get("Deployment", "default", "my-nginx")
    api.store.update(dataclasses.replace(live, metadata=dataclasses.replace(
        live.metadata, annotations={"deployment.kubernetes.io/revision": "1"})))  # as a controller does
    assert api.apply(docs(labelled)) == ["deployment.apps/my-nginx unchanged"]
    assert api.apply(docs(NGINX_DEPLOYMENT)) == ["deployment.apps/my-nginx configured"]  # the user drops tier
    meta = api.store.must_get("Deployment", "default", "my-nginx").metadata
    assert (dict(meta.labels), dict(meta.annotations)) == ({}, {"deployment.kubernetes.io/revision": "1"})


def test_reapply_keeps_the_pods_node(api):
    api.apply(docs(DNS_EXAMPLE))
    pod = api.store.must_get("Pod", "default", "dns-example")
    api.store.update(dataclasses.replace(pod, spec=dataclasses.replace(pod.spec, node_name="worker-1")))
    assert api.apply(docs(DNS_EXAMPLE)) == ["pod/dns-example unchanged"]


# --------------------------------------------------------------------------- delete


def test_delete_service_releases_allocations(api):
    api.apply(docs(NODE_PORT))
    ip = svc(api, "my-service").spec.cluster_ip
    assert api.delete("service", "default", "my-service") == 'service "my-service" deleted'
    assert api.store.get("Service", "default", "my-service") is None
    assert api.cluster_ips.owner_of(ip) is None and api.node_ports.snapshot() == {}
    api.apply(docs(NODE_PORT.replace("name: my-service", "name: other")))  # 30007 is free again


@pytest.mark.parametrize("kind, namespace, name, error, message", [
    ("svc", "default", "x", NotFoundError, 'services "x" not found'),
    ("deployment", "default", "x", NotFoundError, 'deployments.apps "x" not found'),
    ("ns", "", "nope", NotFoundError, 'namespaces "nope" not found'),
    ("namespace", "", "default", InvalidError, 'namespaces "default" is forbidden: this namespace may not be deleted'),
    ("ns", "", "kube-system", InvalidError, 'namespaces "kube-system" is forbidden: this namespace may not be deleted'),
    ("ns", "", "kube-public", InvalidError, 'namespaces "kube-public" is forbidden: this namespace may not be deleted'),
], ids=["service", "deployment", "namespace", "default", "kube-system", "kube-public"])
def test_delete_refusals(api, kind, namespace, name, error, message):
    with pytest.raises(error) as err:
        api.delete(kind, namespace, name)
    assert str(err.value) == message


def test_delete_pod_is_graceful(api):
    api.apply(docs(DNS_EXAMPLE))
    pod = api.store.must_get("Pod", "default", "dns-example")
    api.store.update(dataclasses.replace(pod, spec=dataclasses.replace(pod.spec, node_name="worker-1")))
    assert api.delete("pod", "default", "dns-example") == 'pod "dns-example" deleted'
    terminating = api.store.must_get("Pod", "default", "dns-example")
    assert terminating.metadata.deletion_timestamp is not None


def test_delete_deployment_takes_its_pods(api):
    api.apply(docs(NGINX_DEPLOYMENT, DNS_EXAMPLE))
    deployment = api.store.must_get("Deployment", "default", "my-nginx")
    owned = docs(DNS_EXAMPLE.replace("name: dns-example", "name: my-nginx-abc"))[0].obj
    owned = dataclasses.replace(owned, metadata=dataclasses.replace(owned.metadata, owner_references=(
        dataclasses.replace(_owner_ref(), uid=deployment.metadata.uid, name="my-nginx"),)))
    api.store.create(owned)
    assert api.delete("deploy", "default", "my-nginx") == 'deployment.apps "my-nginx" deleted'
    assert api.store.get("Pod", "default", "my-nginx-abc") is None  # never scheduled: gone at once
    assert api.store.get("Pod", "default", "dns-example") is not None


def _owner_ref():
    from netemu.api.objects import OwnerReference
    return OwnerReference(api_version="apps/v1", kind="Deployment", controller=True)


def test_delete_namespace_takes_everything_and_waits_for_pods(api):
    api.apply(docs(PROD_NAMESPACE, EXTERNAL_NAME, NODE_PORT.replace("name: my-service", "name: web\n  namespace: prod"),
                   DNS_EXAMPLE.replace("namespace: default", "namespace: prod")))
    pod = api.store.must_get("Pod", "prod", "dns-example")
    api.store.update(dataclasses.replace(pod, spec=dataclasses.replace(pod.spec, node_name="worker-1")))
    assert api.delete("namespace", "", "prod") == 'namespace "prod" deleted'
    assert api.store.list("Service", "prod") == []
    assert api.node_ports.snapshot() == {}
    namespace = api.store.must_get("Namespace", "", "prod")
    assert namespace.status.phase == "Terminating"
    with pytest.raises(ManifestErrors) as err:  # no new content while terminating
        api.apply(docs(EXTERNAL_NAME))
    assert problems(err.value) == [[
        'services "my-service" is forbidden: unable to create new content in namespace prod '
        "because it is being terminated"]]
    api.store.delete("Pod", "prod", "dns-example")  # the kubelet finishes the pod
    api.store.drain()
    assert api.store.get("Namespace", "", "prod") is None


def test_delete_empty_namespace_at_once(api):
    api.apply(docs(PROD_NAMESPACE))
    api.delete("ns", "", "prod")
    assert api.store.get("Namespace", "", "prod") is None


def test_delete_manifests(api):
    api.apply(docs(NGINX_DEPLOYMENT, NGINX_SERVICE))
    with pytest.raises(ManifestErrors) as err:
        api.delete_manifests(docs(NGINX_SERVICE, SINGLE_PORT))
    assert problems(err.value) == [['services "my-service" not found']]
    assert api.store.get("Service", "default", "my-nginx") is not None  # nothing deleted
    assert api.delete_manifests(docs(NGINX_DEPLOYMENT, NGINX_SERVICE)) == [
        'deployment.apps "my-nginx" deleted', 'service "my-nginx" deleted']


# --------------------------------------------------------------------------- scale


def test_scale(api):
    api.apply(docs(NGINX_DEPLOYMENT))
    assert api.scale("deployment", "default", "my-nginx", 5) == "deployment.apps/my-nginx scaled"
    assert api.store.must_get("Deployment", "default", "my-nginx").spec.replicas == 5
    with pytest.raises(InvalidError, match="must be greater than or equal to 0"):
        api.scale("deployment", "default", "my-nginx", -1)
    with pytest.raises(InvalidError):
        api.scale("service", "default", "kubernetes", 2)
    with pytest.raises(NotFoundError, match='deployments.apps "nope" not found'):
        api.scale("deployment", "default", "nope", 1)
