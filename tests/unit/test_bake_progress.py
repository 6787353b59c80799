"""`corral bake`'s progress: a spinner per image and step on a terminal, quiet otherwise."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from corral.cli.images_cmd import BakeProgress
from corral.images.recipes import bake_images
from corral.images.store import ImageStore
from corral.spec.model import ImageSpec


def bake_with(console: Console, tmp_path: Path, *, quiet: bool = False) -> None:
    (tmp_path / "site").mkdir(exist_ok=True)
    (tmp_path / "site" / "index.html").write_text("hi\n")
    recipe = ImageSpec.model_validate({"copy": [{"src": "site", "dest": "/www"}]})
    store = ImageStore(tmp_path / "images")
    with BakeProgress(console, quiet=quiet) as shown:
        bake_images(store, {"web": recipe}, tmp_path, progress=shown.done, on_step=shown.step)


def test_a_terminal_sees_each_step_of_each_image(tmp_path: Path) -> None:
    screen = io.StringIO()
    bake_with(Console(file=screen, force_terminal=True, width=120), tmp_path)
    shown = screen.getvalue()
    assert "web: base scratch" in shown  # drawn as the image starts; later steps as it redraws
    assert "baked image web → sha256:" in shown


def test_a_pipe_gets_one_line_per_image_and_json_nothing(tmp_path: Path) -> None:
    piped = io.StringIO()
    bake_with(Console(file=piped, force_terminal=False), tmp_path)
    assert piped.getvalue().startswith("baked image web → sha256:")
    assert piped.getvalue().count("\n") == 1
    quiet = io.StringIO()
    bake_with(Console(file=quiet, force_terminal=True), tmp_path, quiet=True)
    assert quiet.getvalue() == ""
