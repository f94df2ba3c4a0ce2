"""The host model: VMs, pages, workloads, allocation, memory states, latency, hooks.

Imports nothing from ``memtune.plugins``; every technique reaches the model through the hooks in
:mod:`memtune.core.hookspecs`.
"""
