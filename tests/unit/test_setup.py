"""Unit tier: the README's setup command, CI and the lock file agree (CI installs exactly what the
README tells a user to install, from the lock, torch first; the lock pins every package by hash)."""

import re

from tests.conftest import ROOT


def _readme_setup() -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"```bash\n(python3 -m venv .*?)\n```", text, re.S).group(1)


def test_ci_installs_what_the_readme_says_in_the_same_order():
    readme = [c.strip() for c in _readme_setup().split("&&") if c.strip().startswith("pip install")]
    ci = [re.sub(r"\s-q\b", "", line).strip() for line in (ROOT / ".ci/run").read_text().splitlines()
          if line.startswith("pip install") and "--upgrade pip" not in line]
    assert ci == readme
    assert readme[0] == "pip install torch==2.13.0" and "-r requirements.lock" in readme[1]


def test_the_lock_pins_every_package_with_hashes_and_leaves_torch_out():
    lock = (ROOT / "requirements.lock").read_text()
    pins = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==([^ \\\n]+)", lock, re.M)
    assert len(pins) > 50
    names = {n.lower() for n, _ in pins}
    assert "torch" not in names and {"transformers", "gguf", "dvc", "mlflow", "pytest", "ruff"} <= names
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock.strip()):
        if "==" in block.splitlines()[0]:
            assert "--hash=sha256:" in block, block.splitlines()[0]
