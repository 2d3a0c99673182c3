"""Side-by-side benchmarks (ratios against a baseline measured in the same run)."""
