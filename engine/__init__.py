"""The training engine: registries of optimizers and problems, the spec, and the training loop.

It knows nothing about HTTP, Celery or SQL, so it can be tested and benchmarked on its own.
"""

ENGINE_VERSION = "1"
