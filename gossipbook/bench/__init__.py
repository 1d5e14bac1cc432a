"""Benchmarks. Every figure is printed beside a baseline measured in the same run, so the ratio
means something on a noisy machine; each figure is the median of repeated runs."""
