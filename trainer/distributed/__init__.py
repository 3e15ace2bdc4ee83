"""Talking to the other workers: the Collective protocol, cross-replica BatchNorm, per-worker timings."""
