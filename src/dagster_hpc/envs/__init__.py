"""Payload environments on the cluster: build with uv for the compute nodes' platform, key by
content, ship once, publish atomically, verify; pre-deployed environments verified before submit.

Modules: platform (target + probe), key, interpreter (relocatable CPython), wheelhouse, build,
manifest, ship (lookup/publish), predeployed, config (EnvConfig), resolve, gc.
"""
