"""Helpers the tests share; not test modules. Every test imports them one way:
``from tests.helpers.<module> import ...`` (the repository root is on ``sys.path``, see
``[tool.pytest.ini_options] pythonpath`` in pyproject.toml).

* :mod:`tests.helpers.toys`: toy JAX classifiers with planted answers (the engine tests);
* :mod:`tests.helpers.families`: random parameters, masked candidates and the batch-consistency
  check every ported family runs;
* :mod:`tests.helpers.hf`: tiny random-weight transformers models, their folders and the parity
  assertions of the Hugging Face families;
* :mod:`tests.helpers.real_packages`: parity against real installed detector packages.
"""
