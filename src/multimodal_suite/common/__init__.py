"""What two or more systems use, or what a dataset class must import; no Kedro imports.

Layering: ``common`` → ``models`` → ``datasets`` → ``pipelines``, never upward. Code used by one system lives in
its pipeline folder (``pipelines/<system>/``), not here.

- ``device``, ``batching``, ``hashing``, ``atomic``, ``images``, ``rejects``: devices, OOM-safe dynamic batching,
  content keys, atomic writes, image decoding, rejects reports.
- ``params``: typed parameter sections (an unknown key or a wrong type is one clear error).
- ``ray``: the one place that connects to, starts, sizes and stops Ray; ``RayOptions``.
- ``training``: LR schedules, clipped optimizer steps, early stopping, best checkpoint, history, loss curve.
- ``models``: ``ModelSpec`` and the model-family registry (build from a config, load from a hub id, a path or a
  PyPI package; output width; preprocessing).
- ``embeddings``: the lazy, memory-mapped view of embedding shards (lookup, ``missing(keys)``).
- ``encoding``, ``ray_encoding``: batched image and text encoders, in process and on a Ray Data actor pool.
- ``faiss_index``, ``vector_index``: the FAISS index bundle; plan, build, tune to a recall, search.
- ``webdataset_shards``: the tolerant reader of webdataset tar shards.
- ``comics``: the comic domain (book folders, CoSMo annotations).
"""
