r"""Experiments the benchmarks run, as library functions: training loops and the
published numbers to compare with."""
