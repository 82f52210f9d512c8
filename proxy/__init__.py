"""The userspace service proxy (``netemu.proxy``): kube-proxy for emulated nodes.

``ProxyGroup`` is the proxy of one cluster and its only entry point: it takes Service and
EndpointSlice events (``on_service``, ``on_endpointslice``, ``on_synced``), keeps one ``Proxier``
per node (``add_node``), listens on ClusterIPs, NodePorts and load-balancer ingress addresses,
and relays TCP connections and UDP flows to pod endpoints. See ``group`` for the life cycle,
``frontend`` for how listeners follow traffic policies, ``tcp`` for accepting and connecting,
``splice`` (zero-copy) and ``shaped`` (impaired) for the TCP relays, ``udp`` for UDP flows,
``poller`` for the readiness of their raw sockets (errors included, on uvloop too), ``workers``
(with ``worker`` and ``channel``) for more processes sharing the TCP listeners (SO_REUSEPORT).
"""
from .connlog import ConnectionRecord
from .group import ProxyGroup, ProxyOptions
from .impair import Impairment
from .proxier import Proxier

__all__ = ["ConnectionRecord", "Impairment", "ProxyGroup", "ProxyOptions", "Proxier"]
