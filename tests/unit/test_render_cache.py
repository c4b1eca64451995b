"""The compiled-template cache of :mod:`hpcjobs.render`: same scripts, private folder, never an error."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest

from hpcjobs import paths, render


@pytest.fixture(autouse=True)
def _fresh_environment(hpcjobs_home: Path) -> Iterator[None]:
    render.environment.cache_clear()
    yield
    render.environment.cache_clear()


def _cache_files() -> list[Path]:
    return sorted((paths.cache_dir() / "templates").glob("*/__jinja2_*.cache"))


CONTEXT = {"who": 'it\'s "me"; rm -rf /', "items": ["a", "b c"]}
TEMPLATE = "#!/bin/bash\n{% for i in items %}\necho {{ i | q }}\n{% endfor %}\necho {{ who | q }} {{ version }}\n"


def _env(templates: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)), bytecode_cache=render._bytecode_cache(str(templates)), **render._OPTIONS
    )
    env.filters["q"] = render.shq
    env.globals["version"] = "v"
    return env


def test_shipped_templates_render_the_same_from_the_cache() -> None:
    text = render.render("parts/launch.sh.j2", launcher="srun x")
    files = _cache_files()
    assert files, "the first render fills the cache"
    folder = files[0].parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(f.stat().st_mode & 0o077 == 0 for f in files)
    render.environment.cache_clear()

    def no_compiling(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled although the cache has it")

    render.environment().compile = no_compiling  # type: ignore[method-assign]
    assert render.render("parts/launch.sh.j2", launcher="srun x") == text


def test_a_changed_template_is_compiled_again(tmp_path: Path) -> None:
    (tmp_path / "t.sh.j2").write_text(TEMPLATE)
    first = _env(tmp_path).get_template("t.sh.j2").render(**CONTEXT)
    who = render.shq(str(CONTEXT["who"]))
    assert first == f"#!/bin/bash\necho a\necho 'b c'\necho {who} v\n"
    assert _env(tmp_path).get_template("t.sh.j2").render(**CONTEXT) == first
    (tmp_path / "t.sh.j2").write_text(TEMPLATE.replace("echo {{ who", "printf %s {{ who"))
    assert _env(tmp_path).get_template("t.sh.j2").render(**CONTEXT).endswith(f"printf %s {who} v\n")


def test_the_folder_depends_on_the_templates_folder(tmp_path: Path) -> None:
    a = render._bytecode_cache(str(tmp_path / "a"))
    b = render._bytecode_cache(str(tmp_path / "b"))
    assert isinstance(a, jinja2.FileSystemBytecodeCache) and isinstance(b, jinja2.FileSystemBytecodeCache)
    assert a.directory != b.directory


def test_a_folder_others_can_write_is_not_used(tmp_path: Path) -> None:
    cache = render._bytecode_cache(str(tmp_path))
    assert isinstance(cache, jinja2.FileSystemBytecodeCache)
    os.chmod(cache.directory, 0o777)
    assert render._bytecode_cache(str(tmp_path)) is None
    os.chmod(cache.directory, 0o700)
    assert render._bytecode_cache(str(tmp_path)) is not None


def test_no_cache_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setattr(paths, "cache_dir", lambda: blocker)
    (tmp_path / "t.sh.j2").write_text(TEMPLATE)
    assert render._bytecode_cache(str(tmp_path)) is None
    assert _env(tmp_path).get_template("t.sh.j2").render(**CONTEXT).startswith("#!/bin/bash\n")


def test_a_cache_that_cannot_be_written_is_no_error(tmp_path: Path) -> None:
    (tmp_path / "t.sh.j2").write_text(TEMPLATE)
    env = _env(tmp_path)
    assert isinstance(env.bytecode_cache, jinja2.FileSystemBytecodeCache)
    os.rmdir(env.bytecode_cache.directory)  # gone between the check and the write
    assert env.get_template("t.sh.j2").render(**CONTEXT).startswith("#!/bin/bash\n")
