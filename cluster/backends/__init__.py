"""Collective implementations for multi-process backends (torch.distributed; Horovod in its own issue)."""
