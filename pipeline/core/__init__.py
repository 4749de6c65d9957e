"""siftmix's core: what every stage shares and nothing stage-specific.

The stage contract (:mod:`.stage`), the one storage layer (:mod:`.storage`), manifests
(:mod:`.manifest`), Ray execution (:mod:`.ray_runner`), the document schema (:mod:`.schema`),
the shard writer and per-shard skeleton (:mod:`.shards`), hashing (:mod:`.hashing`), the word
scan and n-grams (:mod:`.text`), the error hierarchy (:mod:`.errors`), config building blocks
(:mod:`.config`) and HTML helpers for reports (:mod:`.htmlkit`).

Stage packages (``siftmix.pipeline.ingest``, ``siftmix.filters``, ``siftmix.dedup``,
``siftmix.contamination``, ``siftmix.mixing``) import this package and nothing else of
siftmix; the core imports no stage package (``tests/test_imports.py`` checks both).
"""
