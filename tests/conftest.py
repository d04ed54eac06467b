import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.chdir(ROOT)  # tests read params.yaml relative to the repository root
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download weights at test time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
