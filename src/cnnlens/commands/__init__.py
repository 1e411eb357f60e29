"""CLI subcommands: each module defines ``register(app)`` adding its command(s)."""
