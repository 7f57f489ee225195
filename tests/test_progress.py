"""`vmmlib.progress`: which kind of progress a run shows, and the plain lines a non-interactive run
prints (first step, every interval, the end) — from `fit` itself and from a papermill kernel."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tqdm import tqdm as text_bar

from vmmlib import progress as P


def test_the_environment_variable_wins_and_an_unknown_value_names_the_choices(monkeypatch):
    for mode in P.MODES:
        monkeypatch.setenv("VMM_PROGRESS", mode)
        assert P.progress_mode() == mode
    monkeypatch.setenv("VMM_PROGRESS", "fancy")
    with pytest.raises(ValueError, match="widget, bar, lines, off"):
        P.progress_mode()


def test_a_kernel_without_a_front_end_prints_lines_and_a_live_one_shows_the_widget(monkeypatch):
    monkeypatch.delenv("VMM_PROGRESS", raising=False)
    monkeypatch.delenv("VSCODE_PID", raising=False)
    monkeypatch.setattr(P, "_in_kernel", lambda: True)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert P.progress_mode() == "lines"  # papermill, nbclient, nbconvert --execute
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/20_finetune.ipynb")
    assert P.progress_mode() == "widget"  # JupyterLab


def test_outside_a_kernel_a_terminal_gets_the_text_bar_and_a_pipe_gets_lines(monkeypatch):
    monkeypatch.delenv("VMM_PROGRESS", raising=False)
    monkeypatch.setattr(P, "_in_kernel", lambda: False)

    class Tty:
        def isatty(self):
            return True

    monkeypatch.setattr(P.sys, "stderr", Tty())
    assert P.progress_mode() == "bar"
    bar = P.progress(total=3, file=sys.__stderr__)
    assert isinstance(bar, text_bar)
    bar.close()
    monkeypatch.setattr(P.sys, "stderr", None)  # no stream at all, or a pipe: not a terminal
    assert P.progress_mode() == "lines"


def test_lines_come_at_the_first_step_every_interval_and_at_the_end(monkeypatch):
    clock = iter([0.0] + [float(t) for t in range(1, 100)])  # one second per update
    monkeypatch.setattr(P.time, "monotonic", lambda: next(clock))
    out = []

    class Sink:
        def write(self, s):
            out.append(s)

        def flush(self):
            pass

    bar = P.LineProgress(total=40, desc="fit", unit="step", interval_s=10, file=Sink())
    for _ in range(40):
        bar.set_postfix(loss="0.5")
        bar.update(1)
    bar.close()
    lines = [s for s in "".join(out).splitlines() if s]
    assert lines[0].startswith("fit: 1/40 (2%)")
    assert [line.split()[1] for line in lines] == ["1/40", "11/40", "21/40", "31/40", "40/40"]
    assert "1 step/s" in lines[1] and "loss=0.5" in lines[1] and "ETA 0:29" in lines[1]
    assert "ETA" not in lines[-1] and "0:41 elapsed" in lines[-1]


def test_a_non_interactive_fit_prints_progress_lines(tmp_path, monkeypatch, capsys):
    from tests.test_train import TinyNet, run_fit

    monkeypatch.setenv("VMM_PROGRESS", "lines")
    run_fit(TinyNet(), tmp_path, steps=6, progress=True)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("fit: ")]
    assert lines[0].startswith("fit: 1/6 (17%)") and lines[-1].startswith("fit: 6/6 (100%)")
    assert "loss=" in lines[-1] and "elapsed" in lines[-1]


def test_papermill_log_output_shows_the_progress_lines_and_the_saved_notebook_keeps_them(tmp_path):
    """A real papermill run (kernel without a front end): the lines reach --log-output and the
    executed notebook's text output; no widget."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            textwrap.dedent("""\
            from vmmlib.progress import progress
            for _ in progress(range(5), desc="work", unit="step"):
                pass
            """)
        )
    ]
    src, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, src)
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("VMM_PROGRESS", "JPY_SESSION_NAME")}
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    done = subprocess.run(
        [sys.executable, "-m", "papermill", str(src), str(out), "--log-output", "-k", "python3"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "work: 5/5 (100%)" in done.stdout + done.stderr
    outputs = json.loads(out.read_text())["cells"][0]["outputs"]
    assert {(o["output_type"], o.get("name")) for o in outputs} == {("stream", "stdout")}  # text, no widget
    text = "".join("".join(o["text"]) for o in outputs)
    assert "work: 1/5 (20%)" in text and "work: 5/5 (100%)" in text
