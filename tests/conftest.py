import os, pytest

# Nothing comes from a model hub in tests: the tiny model is built locally by qlora_nb.tiny.
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

@pytest.fixture(scope='session', autouse=True)
def _own_cache(tmp_path_factory):
    "Build the tiny model into a fresh cache for this test session (subprocesses inherit it)."
    old = os.environ.get('QLORA_NB_CACHE')
    os.environ['QLORA_NB_CACHE'] = str(tmp_path_factory.mktemp('qlora_nb_cache'))
    yield
    if old is None: os.environ.pop('QLORA_NB_CACHE', None)
    else: os.environ['QLORA_NB_CACHE'] = old
