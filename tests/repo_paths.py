"""Where the repository and the tests live, for tests in any folder of tests/ (no tests here)."""

import os

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
