"""Shared foundations: the training engine, the pretraining recipe, command-line helpers, errors, run info."""
