import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from rlhfkit_test_db import database_url, engine  # noqa: E402,F401
