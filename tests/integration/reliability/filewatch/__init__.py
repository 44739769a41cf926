"""A test-only file watch for vkbackup subprocesses (see sitecustomize.py here)."""
