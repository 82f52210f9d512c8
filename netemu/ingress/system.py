"""What netemu puts in a cluster for Ingress: the ``netemu`` IngressClass and, like an
ingress-nginx install, a controller Deployment behind a LoadBalancer Service.

The IngressClass (controller ``netemu.dev/ingress``, marked default) exists from the start. The
controller's Namespace, Deployment and Service are created when the first Ingress of that class
appears, so clusters without Ingresses run no extra pod. The Service is an ordinary
``type: LoadBalancer`` Service: its address comes from the load-balancer pool, its NodePorts from
the NodePort range, and the service proxy carries traffic (HTTP on 80, HTTPS on 443) to the
controller pod, whose container (the built-in image ``netemu.dev/ingress-controller``) is the L7
proxy.
"""
from __future__ import annotations

import os

CONTROLLER = "netemu.dev/ingress"
CLASS_NAME = "netemu"
NAMESPACE = "netemu-ingress"
SERVICE = "ingress-controller"
IMAGE = "netemu.dev/ingress-controller:0.1"


def container_port() -> int:
    """80 where this process may bind it (as ingress-nginx listens), else 8080."""
    return 80 if os.geteuid() == 0 else 8080


def container_tls_port() -> int:
    """443 where this process may bind it, else 8443."""
    return 443 if os.geteuid() == 0 else 8443


CLASS_MANIFEST = f"""
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: {CLASS_NAME}
  annotations: {{ingressclass.kubernetes.io/is-default-class: "true"}}
  labels: {{app.kubernetes.io/name: netemu-ingress}}
spec:
  controller: {CONTROLLER}
"""


def controller_manifests() -> str:
    port, tls_port = container_port(), container_tls_port()
    return f"""
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels: {{app.kubernetes.io/name: netemu-ingress}}
---
apiVersion: v1
kind: Service
metadata:
  name: {SERVICE}
  namespace: {NAMESPACE}
  labels: {{app.kubernetes.io/name: netemu-ingress, app.kubernetes.io/component: controller}}
spec:
  type: LoadBalancer
  selector: {{app.kubernetes.io/name: netemu-ingress, app.kubernetes.io/component: controller}}
  ports:
  - {{name: http, port: 80, protocol: TCP, targetPort: http}}
  - {{name: https, port: 443, protocol: TCP, targetPort: https}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {SERVICE}
  namespace: {NAMESPACE}
  labels: {{app.kubernetes.io/name: netemu-ingress, app.kubernetes.io/component: controller}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app.kubernetes.io/name: netemu-ingress, app.kubernetes.io/component: controller}}}}
  template:
    metadata:
      labels: {{app.kubernetes.io/name: netemu-ingress, app.kubernetes.io/component: controller}}
    spec:
      containers:
      - name: controller
        image: {IMAGE}
        ports:
        - {{name: http, containerPort: {port}, protocol: TCP}}
        - {{name: https, containerPort: {tls_port}, protocol: TCP}}
"""
