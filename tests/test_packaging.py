"""requirements.txt (for pip users) stays in step with pyproject.toml / uv.lock."""
import re
import tomllib

from tests.conftest import REPO


def _name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_every_dependency_is_pinned_in_requirements_at_the_locked_version():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line and not line.startswith(("#", " ")) and "==" in line:
            pinned[_name(line)] = line.split("==")[1].split(";")[0].strip()
    lock = (REPO / "uv.lock").read_text()
    for dep in deps:
        name = _name(dep)
        assert name in pinned, f"{name} missing from requirements.txt (re-run the uv export in its header)"
        assert f'name = "{name}"\nversion = "{pinned[name]}"' in lock, f"{name}=={pinned[name]} is not the locked version"
