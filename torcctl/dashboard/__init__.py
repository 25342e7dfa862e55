"""The web dashboard: workflows, their failures and resources in a browser, and the actions the
CLI has (retry, fail, classify, reset, recover, cancel), through the daemon's own RPC methods.

`torcctl dashboard` serves it on 127.0.0.1 for the user's daemon; `torcd --dashboard-port` serves
the same from the daemon. `access` decides who may see it, `layout` places the DAG, `hub` fans the
daemon's event stream out to browsers, `logs` follows a log file, `server` wires them to aiohttp.
"""
