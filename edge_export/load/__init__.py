"""Load stage: a --model spec becomes a module, example inputs, declared dims and data."""
