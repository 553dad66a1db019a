"""The promises the repository makes about itself."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_command():
    readme_commands = [line for line in (ROOT / "README.md").read_text().splitlines() if "install.sh" in line]
    test_command = next(line for line in readme_commands if "pytest" in line)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_importing_the_package_and_the_cli_loads_neither_torch_nor_transformers():
    code = "import sys, rcc_model, rcc_model.cli; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
