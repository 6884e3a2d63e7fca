"""Settings every test runs under.

Tests never download: ``LOOM_OFFLINE=1`` is set before any test module is imported
(subprocesses inherit it), so a feature network whose weights are not in the cache
fails with Loom's offline message instead of fetching them. tests/test_download.py
proves no request is made, and serves its own files from 127.0.0.1.
"""

import os

os.environ["LOOM_OFFLINE"] = "1"
