"""What the tests share and no test module owns: paths and data, tiny models, request bodies, process harnesses,
the session fixtures (a pytest plugin registered by tests/conftest.py) and the test scale. Test modules import from
here, never from each other."""
