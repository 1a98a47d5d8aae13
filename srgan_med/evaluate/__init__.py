"""Research comparison of super-resolution methods against interpolation baselines."""
