__version__ = "0.1.0"

import logging as _logging
# bitsandbytes warns on import, on CPUs with AVX512-BF16, that it cannot fetch an optional kernel from the
# hub (there is no network in many places this runs); it falls back to its own kernel. Keep that quiet.
_logging.getLogger('bitsandbytes.backends.cpu.ops').setLevel(_logging.ERROR)
