"""The dev harness: a local broker and model server, the demo, sample publishing.

Used by ``streamproc demo``, the benchmarks and the tests; never by the services.
"""

__all__: list[str] = []
