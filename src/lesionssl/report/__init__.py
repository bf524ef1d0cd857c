"""Report stage: plots and the comparison report."""
