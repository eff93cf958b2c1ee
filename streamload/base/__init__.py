"""The helpers every layer may use and that import nothing of streamload's but its errors: display names,
the process id after a fork, manifest field checks, crash-safe writes, ``/proc`` measurement (standard
library only: ``procstats`` imports without numpy)."""
