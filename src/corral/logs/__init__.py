"""Central logs of instances: the stamped on-disk format, the per-instance collector, reading
across instances by time, and retention. Stdlib only: the collector runs as its own small
process (`python -I -m corral.logs.collector`) and must start fast."""
