"""Prepared data: tokenizers, token files on disk, host-fed segment batches.

``jaxhpo data prepare`` (:mod:`jaxhpo.data.prepare`) tokenizes a corpus once into memory-mapped
token files; ``task.data=DATA_DIR`` (:mod:`jaxhpo.tasks.tokens`) trains on them, batches read
on the host segment by segment (:mod:`jaxhpo.data.feed`).
"""
