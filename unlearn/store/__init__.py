"""What is on disk: settings and their run folders, checkpoints, run identities, run-folder lookups."""
