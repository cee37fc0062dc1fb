"""The data-story notebook runs headless on real caches, writes its figures, shows where the data
came from, and its assertions are live (a corrupted cache stops it)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import h5py
import nbformat
import numpy as np
import pytest
import soundfile as sf

from sleepsound.config import PreprocessConfig
from sleepsound.data.provenance import source_title
from sleepsound.features.cache import preprocess
from sleepsound.reports.notebook import NotebookError, run_notebook

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "data_story.ipynb"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ("quiet", "breathe", "snore")


def _write_wavs(root: Path, seed: int = 0) -> None:
    """Fallback when the synthetic generator is not available: noisy two-channel clips."""
    rng = np.random.default_rng(seed)
    per_split = {"train": 14, "validation": 4, "test": 4}
    for split, n in per_split.items():
        for k, label in enumerate(CLASSES):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                length = int(16000 * rng.uniform(0.3, 3.0))
                t = np.arange(length) / 16000
                tone = np.sin(2 * np.pi * (120 + 200 * k) * t) * (0.05 + 0.2 * k)
                audio = tone[:, None] + 0.02 * rng.standard_normal((length, 2))
                sf.write(folder / f"s{i:03d}.wav", audio.astype(np.float32), 16000)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("story") / "data"
    try:
        from sleepsound.data.synth import generate_dataset
    except ImportError:
        _write_wavs(root)
    else:
        generate_dataset(root, 120, seed=0, labels=CLASSES, progress=False)
    # one unusable clip, so the invalid-audio report has a row
    sf.write(root / "train" / "quiet" / "zz_empty.wav", np.zeros((0, 2), np.float32), 16000)
    return root


def _cache(data_dir: Path, name: str, **kwargs) -> Path:
    cache = data_dir.parent / name
    preprocess(PreprocessConfig(data_dir=data_dir, cache_dir=cache, workers=1, **kwargs))
    return cache


@pytest.fixture(scope="module")
def cache_dir(data_dir: Path) -> Path:
    return _cache(data_dir, "cache3")


def _title(cache: Path) -> str:
    with h5py.File(cache / "train.h5", "r") as h5:
        return source_title(json.loads(h5.attrs["source"]))


def _run(cache: Path, out: Path):
    return run_notebook(
        NOTEBOOK,
        out / "figures",
        executed_path=out / "executed.ipynb",
        env={"SLEEPSOUND_CACHE_DIR": str(cache)},
        timeout=300,
    )


def _outputs_text(executed: Path) -> str:
    """Everything the executed notebook shows as text."""
    parts = []
    for cell in nbformat.read(executed, as_version=4).cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            for kind in ("text/plain", "text/markdown"):
                parts.append(out.get("data", {}).get(kind, ""))
    return "\n".join(parts)


def _check_figures(figures: list[Path]) -> None:
    assert len(figures) >= 6, figures
    for path in figures:
        assert re.fullmatch(r"data_story_\d{2}_[a-z0-9-]+\.png", path.name), path.name
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE), path
        assert len(data) > 5_000, (path, len(data))


def test_committed_notebook_is_valid_and_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    text = "\n".join(c.source for c in nb.cells)
    assert "SLEEPSOUND_CACHE_DIR" in text and "source_title" in text
    assert '"quiet", "breathe", "snore"' not in text  # classes come from the cache


def test_data_story_runs_on_a_real_cache(cache_dir: Path, tmp_path: Path):
    result = _run(cache_dir, tmp_path)
    _check_figures(result.figures)
    assert {p.parent for p in result.figures} == {tmp_path / "figures"}
    names = [p.name for p in result.figures]
    assert any("class-distribution" in n for n in names) and any("padding" in n for n in names)
    assert result.executed_path == tmp_path / "executed.ipynb" and result.seconds > 0
    executed = result.executed_path.read_text()
    assert _title(cache_dir) in executed
    assert "SYNTHETIC" in executed or "user audio folder" in executed
    assert "zz_empty.wav" in executed  # the invalid-audio report is shown
    nb = nbformat.read(result.executed_path, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert any(_title(cache_dir) in md for md in result.markdown)
    assert not list((tmp_path / "figures").glob(".*.tmp"))


def test_assertions_are_live(cache_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(cache_dir, broken)
    with h5py.File(broken / "train.h5", "r+") as h5:
        h5["spectrograms"][1, 10, 3] = np.nan
    with pytest.raises(NotebookError, match="finiteness") as info:
        _run(broken, tmp_path)
    err = info.value
    assert err.ename == "AssertionError" and isinstance(err.cell_index, int)
    assert err.section.startswith("D)") and "finiteness" in err.traceback
    assert "data_story.ipynb" in str(err) and f"cell {err.cell_index}" in str(err)
    # the executed notebook is still written, to show where it stopped
    assert (tmp_path / "executed.ipynb").exists()
    assert not (tmp_path / "figures").exists() or not list((tmp_path / "figures").iterdir())


def test_two_class_two_channel_cache(data_dir: Path, tmp_path: Path):
    cache = _cache(data_dir, "cache2ch", classes=("quiet", "snore"), channels="both")
    result = _run(cache, tmp_path)
    _check_figures(result.figures)
    shown = _outputs_text(result.executed_path)
    assert "channel 0: in-ear" in shown
    assert "quiet, snore" in shown and "breathe" not in shown


def test_run_notebook_generic(tmp_path: Path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Alpha one"),
        nbformat.v4.new_code_cell(
            "import os\nimport matplotlib.pyplot as plt\n"
            "print(os.environ['STORY_FOO'], os.getcwd())\n"
            "plt.plot([1, 2]); plt.show()"
        ),
        nbformat.v4.new_markdown_cell("## Beta"),
        nbformat.v4.new_code_cell(
            "from IPython.display import Markdown\nMarkdown('| a |\\n|---|')"
        ),
        nbformat.v4.new_code_cell("plt.plot([2, 1]); plt.show()"),
    ]
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    figures = tmp_path / "figs"
    figures.mkdir()
    (figures / "tiny_07_gone.png").write_bytes(b"stale")
    (figures / "other_01_x.png").write_bytes(b"keep")
    executed = tmp_path / "done" / "tiny.ipynb"
    result = run_notebook(path, figures, executed, env={"STORY_FOO": "bar42"}, cwd=figures)
    assert "STORY_FOO" not in os.environ  # the caller's environment is left alone
    assert f"bar42 {figures.resolve()}" in executed.read_text()
    assert [p.name for p in result.figures] == ["tiny_01_alpha-one.png", "tiny_02_beta.png"]
    assert sorted(p.name for p in figures.iterdir()) == [
        "other_01_x.png",
        "tiny_01_alpha-one.png",
        "tiny_02_beta.png",
    ]
    assert result.markdown == ["| a |\n|---|"] and result.executed_path == executed


def test_data_story_reads_a_reference_format_cache_as_dreamcatcher(tmp_path: Path):
    """A cache written by the reference tool (no n_frames, paths, fingerprint; classes as a
    comma string) tells its story, titled DreamCatcher from its dataset_commit, and the file is
    left as it was."""
    from sleepsound.data.fetch import DREAMCATCHER_REVISION
    from sleepsound.features.reference import texture_rows, write_reference_cache

    rng = np.random.default_rng(0)
    cache = tmp_path / "cache"
    for split, n in (("train", 90), ("validation", 30), ("test", 30)):
        labels = np.repeat(np.arange(3), n // 3)
        rows = texture_rows(labels, rng.integers(40, 250, n), rng)
        write_reference_cache(
            cache / f"{split}.h5", [(rows, labels)], n, split, dataset_commit=DREAMCATCHER_REVISION
        )
    before = (cache / "train.h5").read_bytes()
    result = _run(cache, tmp_path)
    executed = result.executed_path.read_text()
    assert f"DreamCatcher (THU-PI-Sensing/DreamCatcher@{DREAMCATCHER_REVISION[:12]})" in executed
    assert "SYNTHETIC" not in executed
    nb = nbformat.read(result.executed_path, as_version=4)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert (cache / "train.h5").read_bytes() == before
