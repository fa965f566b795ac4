"""Where and how a sweep runs: local embedded Ray by default; the command-line entry point."""
