"""Test-wide settings: one intra-op thread. The tests use small tensors, for which
OpenMP's thread start-up and spinning cost more than they save; on a loaded 2-core
machine two threads made single tests up to 100x slower (measured: 108 s vs 1.2 s)."""
import torch

torch.set_num_threads(1)
