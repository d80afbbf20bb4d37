def pytest_configure(config):
    config.addinivalue_line('markers', 'cuda: needs NVIDIA GPUs (skipped without them)')
