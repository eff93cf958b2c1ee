"""Places a dataset lives: a local folder or ``s3://bucket/prefix``, behind one small interface.

A :class:`~streamload.places.protocol.Place` reads the manifest and leases a generation (``open``), checks
that a split's shard files are there, and (for a bucket) publishes a built dataset; the read path and
``--verify`` open every dataset through :func:`~streamload.places.dispatch.open_place` in one pass down the layers:
place -> generations -> layout -> manifest. ``local.py`` is the folder of generations (``layout.py``,
``generations.py``); ``bucket.py`` is the same generation model carried over to objects, through
:mod:`streamload.store`. This layer sits above ``format`` (it reads manifests) and below ``write`` (builds
publish through it) and ``read``.
"""
