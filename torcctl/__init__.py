"""torcctl: the command-line client of torcd."""
