"""The engine: a Python process that runs the code clients send it."""
