"""Resource plots from a real daemon: `torcctl reports plot-resources` (SVG, HTML, PNG through a real
headless Chromium) and the daemon's own, written when a workflow with `generate_plots` ends."""

from __future__ import annotations

import os
import shutil
import struct
import xml.etree.ElementTree as ET

import pytest

SPEC = """\
name: plots
resource_requirements:
  - {name: roomy, memory: 500m, runtime: PT1M}
  - {name: tight, memory: 100m}
jobs:
  - {name: light, command: "true", resource_requirements: roomy}
  - {name: "big <&>", command: "(head -c 250m /dev/zero; sleep 1) | tail >/dev/null", resource_requirements: tight}
  - {name: broken, command: "exit 5"}
"""
PLOTS = ("memory.svg", "runtime.svg", "timeline.svg")


def check_plots(directory) -> str:
    """Each SVG parses; the page holds all three and names the job that went over."""
    for name in PLOTS:
        ET.parse(directory / name)
    page = (directory / "index.html").read_text()
    assert page.count("<svg ") == 3 and "big &lt;&amp;&gt;" in page
    return page


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.skipif(
    not (os.environ.get("TORC_CHROMIUM") or shutil.which("chromium")) and os.environ.get("TORC_REQUIRE_BROWSER") != "1",
    reason="needs Chromium (required where TORC_REQUIRE_BROWSER=1, as in CI)",
)
def test_plot_resources_writes_the_page_the_svgs_and_pngs_rendered_by_chromium(daemon, tmp_path):
    wf = daemon.submit(SPEC)
    daemon.wait(wf)
    out = tmp_path / "made" / "here"
    code, stdout, err = daemon.ctl("reports", "plot-resources", str(wf), "-o", str(out), "--png")
    assert code == 0, err
    assert stdout.strip() == str(out / "index.html")
    page = check_plots(out)
    table = page[page.index("<table>") :]
    assert "memory: over its limit" in table and "light" not in table
    assert "oom" in (out / "memory.svg").read_text()
    for name in PLOTS:
        width, height = png_size(out / name.replace(".svg", ".png"))
        assert width >= 700 and height >= 150


def test_plot_resources_without_chromium_writes_the_svgs_then_fails_in_one_line(daemon, tmp_path, monkeypatch):
    wf = daemon.submit(SPEC)
    daemon.wait(wf)
    monkeypatch.setenv("TORC_CHROMIUM", str(tmp_path / "no-such-chromium"))
    code, _, err = daemon.ctl("reports", "plot-resources", str(wf), "-o", str(tmp_path / "p"), "--png")
    assert code == 2 and err.count("\n") == 1 and "TORC_CHROMIUM" in err, err
    check_plots(tmp_path / "p")
    assert not (tmp_path / "p" / "memory.png").exists()


def test_plot_resources_refuses_a_missing_workflow_and_an_output_that_is_a_file(daemon, tmp_path):
    code, _, err = daemon.ctl("reports", "plot-resources", "999", "-o", str(tmp_path / "p"))
    assert code == 2 and "no workflow 999" in err
    wf = daemon.submit("name: one\njobs: [{name: a, command: 'true'}]\n")
    daemon.wait(wf)
    (tmp_path / "file").write_text("")
    code, _, err = daemon.ctl("reports", "plot-resources", str(wf), "-o", str(tmp_path / "file"))
    assert code == 2 and "is not a directory" in err, err


GENERATING = SPEC.replace("name: plots\n", "name: plots\nresource_monitor: {generate_plots: true}\n")


def test_the_daemon_writes_the_plots_when_a_workflow_with_generate_plots_ends(daemon):
    wf = daemon.submit(GENERATING)
    daemon.wait(wf)
    directory = daemon.tmp / "output" / "resource_plots"
    daemon.wait_for(lambda: (directory / "index.html").exists(), what="the resource plots")
    check_plots(directory)
    assert not any(name.endswith(".png") for name in os.listdir(directory))


def test_a_workflow_without_generate_plots_gets_no_plots(daemon):
    wf = daemon.submit(SPEC)
    daemon.wait(wf)
    assert not (daemon.tmp / "output" / "resource_plots").exists()


def test_the_daemon_follows_no_symbolic_link_planted_at_the_plots_or_in_their_directory(daemon, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = daemon.tmp / "first"
    (first / "output").mkdir(parents=True)
    (first / "output" / "resource_plots").symlink_to(elsewhere)
    wf = daemon.submit(GENERATING, cwd=first)
    daemon.wait(wf)
    daemon.wait_for(
        lambda: "resource_plots_not_written" in daemon.log.read_text(), what="the refusal in the daemon's log"
    )
    assert not list(elsewhere.iterdir())

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    second = daemon.tmp / "second"
    (second / "output" / "resource_plots").mkdir(parents=True)
    (second / "output" / "resource_plots" / "memory.svg").symlink_to(victim)
    wf = daemon.submit(GENERATING, cwd=second)
    daemon.wait(wf)
    directory = second / "output" / "resource_plots"
    daemon.wait_for(lambda: (directory / "index.html").exists(), what="the resource plots")
    assert victim.read_text() == "keep me" and not (directory / "memory.svg").is_symlink()
    check_plots(directory)
    assert daemon.call("ping") is not None
