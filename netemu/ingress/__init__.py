"""netemu's built-in ingress controller (IngressClass controller ``netemu.dev/ingress``).

``system``: the IngressClass and the controller's Deployment and LoadBalancer Service;
``index``: which Ingresses are netemu's, their route table and their status; ``routes``: host and
path matching with the Ingress spec's precedence; ``proxy``: the aiohttp L7 proxy; ``image``: the
container image the controller pod runs.
"""
