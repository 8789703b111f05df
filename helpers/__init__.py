"""Tested helpers for the lecture notebooks: ``from helpers import model, data, ...``.

One module per concept: ``runtime`` (profile, cache, device, seeds), ``tokenizer``, ``download``,
``data``, ``model``, ``losses``, and the modules later lectures add.
"""

__version__ = "0.1.0"
