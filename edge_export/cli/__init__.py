"""The command line: one module per command group, the run's progress and summary output."""
