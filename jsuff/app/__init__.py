"""The jsuff application: studies, the report, the demos, the model zoo and the command line.

It sits on top of the library (``jsuff`` proper, pure JAX) and is the only jsuff code that may
import ``converters`` (the PyTorch side). Nothing in the library imports from here.
"""

__all__: list[str] = []
