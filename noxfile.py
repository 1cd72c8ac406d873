"""Sessions for mlx-proof. `nox -s serve` and `nox -s tests` are the whole setup."""

from __future__ import annotations

import nox

# uv makes the second and later venvs nearly free (shared wheel cache); plain
# virtualenv still works where uv is missing.
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]


@nox.session
def serve(session: nox.Session) -> None:
    """Serve the embedded default model (or `-- --model ID --port N ...`)."""
    session.install("-e", ".")
    session.run("mlx-proof", "serve", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests, plus integration tests against a real server on the real default model."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)
