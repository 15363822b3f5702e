"""Built-in learners. Each registers through the `nevisbench.learners` entry-point group in
pyproject.toml, exactly as a third-party plugin does."""

__all__: list[str] = []
