__version__ = "0.1.0"

import os as _os
# On the CPU, torch's bfloat16 matmuls go through oneDNN, which keeps the kernels (and their buffers) it
# builds for every new input shape: oneDNN's primitive cache (1,024 entries) and ideep's (LRU_CACHE_CAPACITY,
# 1,024). Batches of varying shape (a token budget, length grouping) then grow resident memory by tens of MB
# a batch: the benchmark model went from 1.0 to 1.9 GB over its first 40 batches of 400 conversations. Small caches
# keep what one step reuses and no more, at no measured cost in speed (90_benchmark). Values set by the user
# win; this must happen before torch's first oneDNN call, which importing qlora_nb early ensures.
_os.environ.setdefault('ONEDNN_PRIMITIVE_CACHE_CAPACITY', '32')
_os.environ.setdefault('LRU_CACHE_CAPACITY', '1')

import logging as _logging
# bitsandbytes warns on import, on CPUs with AVX512-BF16, that it cannot fetch an optional kernel from the
# hub (there is no network in many places this runs); it falls back to its own kernel. Keep that quiet.
_logging.getLogger('bitsandbytes.backends.cpu.ops').setLevel(_logging.ERROR)

class _DropOfflineNotice(_logging.Filter):
    "Drop one known notice of the `kernels` package; everything else it logs still shows."
    def filter(self, record): return not record.getMessage().startswith('Skipping publisher trust check for ')

# kernels (a dependency of transformers >= 5.25) logs "Skipping publisher trust check for '<repo>' because Hugging Face
# Hub is in offline mode." whenever a hub kernel is looked up offline: bitsandbytes looks one up on import on CPUs with
# AVX512-BF16, so every 4-bit load printed it. Offline is how qlora_nb is meant to run (HF_HUB_OFFLINE=1 in tests);
# the notice tells a user nothing they can act on. Only that message is dropped, at the one logger that emits it
# (`kernels/_internals/hf_hub.py`), so the package, its notebooks and `qlora-nb` all stay quiet about it.
_logging.getLogger('kernels._internals.hf_hub').addFilter(_DropOfflineNotice())
