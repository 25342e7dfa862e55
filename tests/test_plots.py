"""The resource plots as pure functions: attempts in, well-formed SVG out (tables of cases, then a
hypothesis property), and the files they are written to, never through a symbolic link."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torcd.plots import index_html, memory_svg, plot_files, runtime_svg, timeline_svg
from torcd.plots.charts import MAX_POINTS
from torcd.plots.files import PlotDirectoryError, write_plot_files
from torcd.plots.svg import esc, format_bytes, format_seconds, linear_second_ticks
from torcd.plots.timeline import MAX_BARS
from torcd.protocol import AttemptInfo

NS = "{http://www.w3.org/2000/svg}"
GIB = 1 << 30


def attempt(job: int, **kw) -> AttemptInfo:
    fields = {"run_id": 1, "attempt_id": 1, "start_time": 1000.0, "end_time": 1010.0, "return_code": 0}
    fields.update(kw)
    fields.setdefault("job_name", f"job{job}")
    return AttemptInfo(job_id=job, **fields)  # type: ignore[arg-type]


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg" and root.get("viewBox", "").startswith("0 0 ")
    return root


def classes(root: ET.Element, tag: str) -> list[str]:
    return [e.get("class", "") for e in root.iter(f"{NS}{tag}") if e.get("class")]


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        ([], []),
        ([attempt(1, peak_memory=GIB // 2, memory_limit=GIB)], ["ok"]),
        ([attempt(1, peak_memory=int(0.95 * GIB), memory_limit=GIB)], ["near-limit"]),
        ([attempt(1, peak_memory=2 * GIB, memory_limit=GIB)], ["over-limit"]),
        ([attempt(1, peak_memory=GIB, memory_limit=GIB, return_code=137, cause="oom")], ["oom"]),
        ([attempt(1, peak_memory=GIB // 2, memory_limit=GIB, return_code=3)], ["failed"]),
        ([attempt(1, peak_memory=GIB // 2, memory_limit=None)], []),  # no limit: counted, not drawn
        ([attempt(1, peak_memory=None, memory_limit=GIB)], []),  # never sampled
        ([attempt(1, peak_memory=0, memory_limit=GIB)], ["ok"]),  # zero on a log axis
        ([attempt(1, peak_memory=1 << 59, memory_limit=1 << 60)], ["ok"]),  # huge
        ([attempt(1, end_time=None, peak_memory=GIB, memory_limit=GIB)], []),  # still running
        # the job's last finished attempt only: the retry that succeeded, not the oom before it
        (
            [
                attempt(1, peak_memory=GIB, memory_limit=GIB, return_code=137, cause="oom"),
                attempt(1, attempt_id=2, peak_memory=GIB, memory_limit=2 * GIB),
            ],
            ["ok"],
        ),
    ],
)
def test_memory_plot_draws_one_point_per_finished_job_coloured_by_outcome(attempts, expected):
    root = parse(memory_svg(attempts))
    assert classes(root, "circle") == expected
    assert root.find(f"{NS}title") is not None and "memory limit" in "".join(root.itertext())


@pytest.mark.parametrize(
    ("attempt_", "expected"),
    [
        (attempt(1, runtime_limit=100.0), "ok"),
        (attempt(1, end_time=1000.0, runtime_limit=100.0), "ok"),  # zero-length runtime
        (attempt(1, end_time=1095.0, runtime_limit=100.0), "near-limit"),
        (attempt(1, end_time=1100.5, runtime_limit=100.0, return_code=137, cause="timeout"), "timeout"),
        (attempt(1, end_time=1000.0 + 86400 * 400, runtime_limit=86400 * 365.0), "over-limit"),
    ],
)
def test_runtime_plot_places_each_job_against_its_runtime_limit(attempt_, expected):
    assert classes(parse(runtime_svg([attempt_])), "circle") == [expected]


def test_a_job_over_its_limit_sits_above_one_under_it_at_the_same_limit():
    root = parse(
        memory_svg(
            [attempt(1, peak_memory=GIB // 2, memory_limit=GIB), attempt(2, peak_memory=2 * GIB, memory_limit=GIB)]
        )
    )
    (under, over) = sorted(root.iter(f"{NS}circle"), key=lambda c: c.get("class") != "ok")
    assert under.get("cx") == over.get("cx") and float(over.get("cy")) < float(under.get("cy"))


def test_a_runtime_plot_without_any_limit_says_so_and_draws_no_point():
    text = "".join(parse(runtime_svg([attempt(1), attempt(2)])).itertext())
    assert "0 of 2 jobs shown" in text and "2 without a runtime limit" in text


def test_axes_read_in_human_units():
    svg = memory_svg([attempt(1, peak_memory=300 << 20, memory_limit=GIB)])
    assert "MiB" in svg and "GiB" in svg
    assert [label for _, label in linear_second_ticks(120)] == [f"{s} s" for s in range(0, 121, 15)]
    assert [label for _, label in linear_second_ticks(3 * 3600)][:3] == ["0 min", "30 min", "60 min"]
    assert (format_bytes(1536), format_bytes(GIB), format_seconds(90), format_seconds(0.25)) == (
        "1.5 KiB",
        "1 GiB",
        "1.5 min",
        "0.25 s",
    )


def test_a_hundred_thousand_jobs_give_a_sampled_plot_of_bounded_size_with_every_oom_kept():
    attempts = [
        attempt(
            i,
            peak_memory=(i % 1000 + 1) << 20,
            memory_limit=1000 << 20,
            return_code=137 if i % 5000 == 0 else 0,
            cause="oom" if i % 5000 == 0 else None,
        )
        for i in range(100_000)
    ]
    svg = memory_svg(attempts)
    root = parse(svg)
    drawn = classes(root, "circle")
    assert len(drawn) == MAX_POINTS and drawn.count("oom") == 20
    assert len(svg) < 600_000 and "2,000 of 100,000 jobs shown (sampled" in svg


def test_timeline_has_a_lane_per_host_and_caps_its_bars_at_scale():
    attempts = [
        attempt(i, host=f"node{i % 3}", start_time=1000.0 + i, end_time=None if i % 97 == 0 else 1005.0 + i)
        for i in range(MAX_BARS + 500)
    ]
    svg = timeline_svg(attempts, now=1000.0 + MAX_BARS + 600)
    root = parse(svg)
    bars = classes(root, "rect")
    assert len(bars) == MAX_BARS and "running" in bars and "ok" in bars
    assert f"the last {MAX_BARS:,} of {MAX_BARS + 500:,} attempts, on 3 hosts" in svg
    lanes = [t.text for t in root.iter(f"{NS}text") if t.text and t.text.startswith("node")]
    assert lanes == ["node0", "node1", "node2"]


def test_timeline_folds_hosts_past_the_cap_into_one_lane():
    attempts = [attempt(i, host=f"h{i:03}", start_time=1000.0 + i, end_time=1001.0 + i) for i in range(100)]
    text = "".join(parse(timeline_svg(attempts)).itertext())
    assert "71 other hosts" in text and "share the last lane" in text


def test_timeline_of_nothing_and_of_a_zero_length_attempt_is_still_a_picture():
    assert "no attempts yet" in "".join(parse(timeline_svg([])).itertext())
    root = parse(timeline_svg([attempt(1, end_time=1000.0, host=None, cause="oom", return_code=137)]))
    assert classes(root, "rect") == ["oom"]


HOSTILE = ["<script>alert(1)</script>", "a & b", "quote \" and ' apostrophe", "ctl\x01\x1b[0m", "\ud800 lone", "]]>"]


@pytest.mark.parametrize("name", HOSTILE)
def test_user_text_is_escaped_never_markup(name):
    attempts = [
        attempt(1, job_name=name, host=name, peak_memory=GIB, memory_limit=GIB // 2, runtime_limit=5.0),
    ]
    files = plot_files(attempts, f"Workflow 1 {name}")
    for svg in (files["memory.svg"], files["runtime.svg"], files["timeline.svg"]):
        root = parse(svg)
        assert not list(root.iter(f"{NS}script")) and not list(root.iter("script"))
        svg.encode()  # no lone surrogate survives
    assert "<script>" not in files["index.html"] and files["index.html"].count("<table>") == 1
    assert esc("<&>") == "&lt;&amp;&gt;"


def test_index_page_holds_the_three_plots_and_a_table_of_jobs_near_or_over_a_limit():
    attempts = [
        attempt(1, job_name="fine", peak_memory=GIB // 2, memory_limit=GIB),
        attempt(2, job_name="greedy", peak_memory=2 * GIB, memory_limit=GIB, cause="oom", return_code=137),
        attempt(3, job_name="close", end_time=1095.0, runtime_limit=100.0),
    ]
    page = plot_files(attempts, "wf")["index.html"]
    assert page.count("<svg ") == 3 and "Content-Security-Policy" in page
    table = page[page.index("<table>") :]
    assert "greedy" in table and "close" in table and "fine" not in table
    assert "None: every job stayed" in index_html("wf", {}, [])


def _attempts():
    finite = st.floats(min_value=0, max_value=1e12, allow_nan=False)
    sizes = st.none() | st.integers(min_value=0, max_value=1 << 62)
    one = st.builds(
        AttemptInfo,
        job_id=st.integers(1, 50),
        run_id=st.just(1),
        attempt_id=st.integers(1, 5),
        start_time=finite,
        end_time=st.none() | finite,
        host=st.none() | st.text(max_size=30),
        return_code=st.none() | st.integers(-1, 255),
        cause=st.sampled_from([None, "oom", "timeout", "missing_output"]),
        runtime_limit=st.none() | st.floats(min_value=0, max_value=1e10, allow_nan=False),
        memory_limit=sizes,
        peak_memory=sizes,
        job_name=st.none() | st.text(max_size=30),
    )
    return st.lists(one, max_size=40)


@settings(max_examples=60, deadline=None)
@given(_attempts(), st.none() | st.floats(min_value=0, max_value=1e12))
def test_any_attempts_give_well_formed_svg(attempts, now):
    for svg in (memory_svg(attempts), runtime_svg(attempts), timeline_svg(attempts, now=now)):
        parse(svg)
        svg.encode()


def test_files_are_written_and_a_planted_link_at_a_name_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    out = tmp_path / "plots"
    out.mkdir()
    (out / "memory.svg").symlink_to(victim)
    (out / f".index.html.{os.getpid()}.tmp").symlink_to(victim)  # even at the temporary name
    written = write_plot_files(str(out), {"memory.svg": "<svg/>", "index.html": "<html/>"})
    assert victim.read_text() == "keep me"
    assert [os.path.basename(p) for p in written] == ["memory.svg", "index.html"]
    assert not (out / "memory.svg").is_symlink() and (out / "memory.svg").read_text() == "<svg/>"
    assert sorted(os.listdir(out)) == ["index.html", "memory.svg"]


def test_a_directory_that_is_a_link_or_a_file_is_refused_and_a_missing_one_made(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(PlotDirectoryError, match="symbolic link"):
        write_plot_files(str(tmp_path / "link"), {"a.svg": "x"})
    assert not list(target.iterdir())
    (tmp_path / "file").write_text("")
    with pytest.raises(PlotDirectoryError, match="not a directory"):
        write_plot_files(str(tmp_path / "file"), {"a.svg": "x"})
    write_plot_files(str(tmp_path / "new" / "deeper"), {"a.svg": "x"})
    assert (tmp_path / "new" / "deeper" / "a.svg").read_text() == "x"
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(PlotDirectoryError, match="written by other users"):
        write_plot_files(str(shared), {"a.svg": "x"})
