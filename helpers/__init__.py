"""Tested helpers for the lecture notebooks: ``from helpers import model, data, ...``.

One module per concept (the README's table lists them all): ``runtime`` (profile, cache, device, seeds),
``files`` (atomic writes), ``tokenizer``, ``download``, ``data``, ``model``, ``losses``, ``generation``,
``history``, ``training``, ``checkpoints``, ``plotting``, ``gpt2_files``, ``gpt2_formats``, ``weights``,
``spam_data``, ``classifier``, ``prefix_cache``, ``lora``, ``instruction``, ``evaluation``, ``perf``,
``prepare`` and ``shards`` (token shards), ``pretrain`` (the script) and ``lectures`` (the runner).
"""

__version__ = "0.1.0"
