"""``pandamq pilot-bundle``: the pilot and its pure-Python dependencies in one zipapp.

The batch script of a worker node then needs nothing but python3. The
bundle carries exactly the project modules the pilot imports, found by
importing the pilot in a fresh interpreter, and the whole of each
third-party package it imports (they load parts of themselves lazily).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipapp
from pathlib import Path

import click

from broker.errors import BadInput, ConfigError

#: Where this project's packages are (broker/, pilot_agent/, ddm_bridge/, ...).
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: Imported by a dependency only if present (kombu's YAML serializer): left out when compiled.
OPTIONAL = ("yaml",)
ENTRY = "import sys\n\nfrom pilot_agent.__main__ import main\n\nsys.exit(main())\n"
#: Prints the modules importing the pilot loads (not those the interpreter had already),
#: with its default storage, the SE as a directory (``pilot_storage = "local"``; the
#: pilot opens its storage when it starts).
LIST_IMPORTS = (
    "import json, sys\n"
    "before = set(sys.modules)\n"
    "import pilot_agent.__main__, pilot_agent.storage.local\n"
    "new = {n: getattr(m, '__file__', None) for n, m in sys.modules.items() if n not in before}\n"
    "print(json.dumps(new))"
)


def pilot_imports() -> dict[str, str]:
    """Every module the pilot loads, with its file, from a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", LIST_IMPORTS], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ConfigError(f"cannot import the pilot to bundle it: {done.stderr.strip()}")
    modules: dict[str, str | None] = json.loads(done.stdout)
    return {name: path for name, path in modules.items() if path}


def is_project(name: str) -> bool:
    """Whether module ``name`` belongs to one of this project's packages, of which the
    bundle carries only the modules the pilot loads (not, say, ddm_bridge's SQL)."""
    return (PROJECT_ROOT / name.split(".", maxsplit=1)[0] / "__init__.py").is_file()


def _is_stdlib(path: str) -> bool:
    paths = sysconfig.get_paths()
    site = (paths["purelib"], paths["platlib"])
    stdlib = (paths["stdlib"], paths["platstdlib"])
    return path.startswith(stdlib) and not path.startswith(site)


def _is_third_party(name: str, path: str) -> bool:
    """A top-level module or package from site-packages (not the standard library)."""
    return "." not in name and path.endswith(".py") and not _is_stdlib(path)


def _copy_project_module(name: str, path: str, staging: Path) -> None:
    """One module of this project, at its place in its package."""
    parts = name.split(".")
    relative = Path(*parts, "__init__.py") if path.endswith("__init__.py") else Path(*parts)
    target = staging / (relative if relative.suffix else relative.with_suffix(".py"))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)


def _copy_package(name: str, path: str, staging: Path) -> bool:
    """A third-party package whole; refused if it has compiled parts (a zip cannot load them).

    False for an optional package left out.
    """
    source = Path(path).parent if path.endswith("__init__.py") else Path(path)
    compiled = (
        [p for p in source.rglob("*") if p.suffix in (".so", ".pyd")] if source.is_dir() else []
    )
    if compiled:
        if name in OPTIONAL:
            return False
        raise BadInput(f"the pilot imports {name}, which is not pure Python ({compiled[0].name})")
    if source.is_dir():
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(source, staging / name, ignore=ignore)
    else:
        shutil.copyfile(source, staging / source.name)
    return True


def stage(staging: Path) -> list[str]:
    """Lay out the bundle's files in ``staging``; the third-party packages it carries."""
    carried = []
    for name, path in sorted(pilot_imports().items()):
        if is_project(name):
            _copy_project_module(name, path, staging)
        elif _is_third_party(name, path) and _copy_package(name, path, staging):
            carried.append(name)
    (staging / "__main__.py").write_text(ENTRY)
    return carried


def build(output: Path) -> list[str]:
    """Write the pilot bundle to ``output``; the third-party packages it carries."""
    with tempfile.TemporaryDirectory(prefix="pandamq-bundle-") as tmp:
        carried = stage(Path(tmp))
        zipapp.create_archive(tmp, output, interpreter="/usr/bin/env python3", compressed=True)
    return carried


@click.command("pilot-bundle")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=Path("pilot.pyz"),
    show_default=True,
    help="Where to write the bundle.",
)
def pilot_bundle(output: Path) -> None:
    """Build a self-contained pilot (a zipapp) that runs with only python3: `python3 pilot.pyz`."""
    carried = build(output)
    click.echo(f"wrote {output} (pilot with {', '.join(carried) or 'no other packages'})")
