"""Run a report notebook headless and collect what it shows.

:func:`run_notebook` executes a notebook with nbclient in a kernel that runs on *this* Python
interpreter (so the kernel sees the same virtual environment and the same ``sleepsound``),
saves every ``image/png`` output as ``FIGURES/<stem>_<NN>_<slug>.png`` (``NN`` a running
number, ``slug`` the nearest markdown heading above the cell, else ``cell<index>``), and can
write the executed notebook (with outputs). A cell that fails (an ``assert`` included) raises
:class:`NotebookError` naming the notebook, the cell and the error.

It knows nothing about any particular notebook: the data story and the results notebook both
go through it; parameters reach a notebook through environment variables (``env``).
"""

from __future__ import annotations

import base64
import os
import re
import site
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from sleepsound.atomic import atomic_write_bytes

INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


class NotebookError(RuntimeError):
    """A notebook cell failed; ``cell_index``, ``ename``, ``evalue`` and ``traceback`` say how."""

    def __init__(
        self,
        notebook: Path,
        cell_index: int | None,
        ename: str,
        evalue: str,
        traceback: str = "",
        section: str = "",
    ):
        self.notebook = Path(notebook)
        self.cell_index = cell_index
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback
        self.section = section
        where = "while starting" if cell_index is None else f"in cell {cell_index}"
        if section:
            where += f" (section {section!r})"
        super().__init__(f"notebook {self.notebook.name} failed {where}: {ename}: {evalue}")


@dataclass
class NotebookResult:
    notebook: Path
    figures: list[Path] = field(default_factory=list)
    executed_path: Path | None = None
    seconds: float = 0.0
    markdown: list[str] = field(default_factory=list)  # text/markdown outputs, in order


class _ThisPythonKernelManager(AsyncKernelManager):
    """A kernel manager whose python3 kernel is always ``sys.executable -m ipykernel_launcher``,
    whatever kernelspecs the machine has installed. With ``socket_dir`` set (a subclass per run,
    on POSIX) it talks to the kernel over Unix sockets there rather than over localhost TCP."""

    socket_dir: str | None = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.socket_dir is not None:
            self.transport = "ipc"
            self.ip = os.path.join(self.socket_dir, "k")

    @property
    def kernel_spec(self) -> KernelSpec:
        if self._kernel_spec is None:
            self._kernel_spec = KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                display_name=f"Python {sys.version_info.major} ({sys.executable})",
                language="python",
            )
        return self._kernel_spec


def slugify(text: str, max_len: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "figure"


def _kernel_env(env: dict[str, str] | None) -> dict[str, str]:
    """The environment of the kernel: ours, plus ``env``, with inline figures and this
    ``sleepsound`` importable."""
    import sleepsound

    merged = dict(os.environ)
    merged["MPLBACKEND"] = INLINE_BACKEND  # an inherited Agg backend would swallow every figure
    src = str(Path(sleepsound.__file__).resolve().parents[1])
    if src not in {*site.getsitepackages(), site.getusersitepackages()}:
        rest = [p for p in merged.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
        merged["PYTHONPATH"] = os.pathsep.join([src, *rest])
    merged.update({k: str(v) for k, v in (env or {}).items()})
    return merged


def _sections(nb) -> list[str]:
    """For every cell, the text of the nearest markdown heading at or above it ('' if none)."""
    out, current = [], ""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            headings = _HEADING.findall(cell.source)
            if headings:
                current = headings[-1]
        out.append(current)
    return out


def _error_of(nb, cell_index: int | None) -> tuple[int | None, str, str, str]:
    """The (cell index, ename, evalue, traceback) of the first error output in the notebook."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                tb = _ANSI.sub("", "\n".join(out.get("traceback", [])))
                return i, out.get("ename", "Error"), out.get("evalue", ""), tb
    return cell_index, "", "", ""


def _save_figures(nb, stem: str, figures_dir: Path) -> list[Path]:
    figures_dir.mkdir(parents=True, exist_ok=True)
    sections = _sections(nb)
    paths: list[Path] = []
    for i, cell in enumerate(nb.cells):
        slug = slugify(sections[i]) if sections[i] else f"cell{i}"
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png is None:
                continue
            path = figures_dir / f"{stem}_{len(paths) + 1:02d}_{slug}.png"
            atomic_write_bytes(path, base64.b64decode(png))
            paths.append(path)
    # figures a previous run of this notebook left behind (renamed or removed sections)
    keep = set(paths)
    for old in figures_dir.glob(f"{stem}_[0-9][0-9]*_*.png"):
        if old not in keep and re.fullmatch(rf"{re.escape(stem)}_\d{{2,}}_.+\.png", old.name):
            old.unlink()
    return paths


def _markdown_outputs(nb) -> list[str]:
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            md = out.get("data", {}).get("text/markdown")
            if md is not None:
                texts.append(md if isinstance(md, str) else "".join(md))
    return texts


def _write_notebook(nb, path: Path) -> None:
    atomic_write_bytes(path, nbformat.writes(nb).encode())


def run_notebook(
    notebook: Path,
    figures_dir: Path,
    executed_path: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: int = 600,
    cwd: Path | None = None,
) -> NotebookResult:
    """Execute ``notebook`` and save its figures under ``figures_dir``.

    ``env`` is added to the kernel's environment (the caller's own is left untouched);
    ``timeout`` is the limit per cell in seconds; ``cwd`` is the kernel's working directory
    (default: the notebook's folder, as in Jupyter). ``executed_path``, when given, receives the
    executed notebook, also when a cell fails (to show where). Raises :class:`NotebookError`.
    """
    notebook, figures_dir = Path(notebook), Path(figures_dir)
    t0 = time.perf_counter()
    nb = nbformat.read(notebook, as_version=4)
    current: dict[str, int | None] = {"cell": None}

    def on_cell_start(cell, cell_index: int) -> None:
        current["cell"] = cell_index

    with tempfile.TemporaryDirectory(prefix="sleepsound-kernel-") as socket_dir:
        manager = _ThisPythonKernelManager
        if os.name == "posix":
            manager = type("_RunKernelManager", (manager,), {"socket_dir": socket_dir})
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            kernel_manager_class=manager,
            resources={"metadata": {"path": str(Path(cwd or notebook.parent).resolve())}},
            on_cell_start=on_cell_start,
            allow_errors=False,
        )
        error: Exception | None = None
        try:
            client.execute(env=_kernel_env(env))
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
            error = exc
    if error is not None:
        if executed_path is not None:
            _write_notebook(nb, Path(executed_path))
        index, ename, evalue, tb = _error_of(nb, current["cell"])
        if not ename:  # a timeout or a dead kernel: no error output in the notebook
            ename = type(error).__name__
            evalue = _ANSI.sub("", str(error)).strip().splitlines()[0] if str(error) else ""
        section = _sections(nb)[index] if index is not None else ""
        raise NotebookError(notebook, index, ename, evalue, tb, section) from error
    figures = _save_figures(nb, notebook.stem, figures_dir)
    if executed_path is not None:
        executed_path = Path(executed_path)
        _write_notebook(nb, executed_path)
    return NotebookResult(
        notebook=notebook,
        figures=figures,
        executed_path=executed_path,
        seconds=time.perf_counter() - t0,
        markdown=_markdown_outputs(nb),
    )
