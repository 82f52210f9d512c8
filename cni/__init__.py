"""netemu's CNI package (import name ``netemu.cni``): CNI 1.0/1.1 plugins usable in-process
and as executables.

- ``types``: network configuration, host-local IPAM configuration, results, CNI_ARGS.
- ``skel``: the shared skeleton (env, stdin, stdout, error JSON) and ``invoke`` for in-process use.
- ``allocator`` (pure range logic), ``store`` (Store protocol, FakeStore), ``disk_store``
  (the locked on-disk store): host-local's parts.
- ``host_local``: the host-local IPAM plugin. ``loopback_alias``: pod addresses in 127/8 for
  the loopback backend.

Submodules are not imported here, so an executable loads only what it uses.
"""
