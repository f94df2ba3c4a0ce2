"""memtune on a real Linux host: apply a policy, watch it, and hold the model against it.

One job per module: ``lock`` (the host-wide lock), ``state`` (what was changed, kept in a file so
that ``memtune live cleanup`` can undo it after a SIGKILL), ``sysfs`` (writes that save the old
value first), ``cgroup`` (memory cgroups v1 + cgroup2 groups for PSI), ``ksm``, ``swap`` (swap file
and zram), ``content`` (page bytes from the model's content ids), ``worker`` (one process per VM),
``measure`` (counters), ``scale`` (a scenario scaled to fit this machine), ``control`` (memory state
and balloon targets), ``driver`` (the host-driver interface: simulator and Linux), ``compare``
(model vs real). See docs/live.md.
"""
