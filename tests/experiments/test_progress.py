"""Progress of sweeps, comparisons and exports: plain lines (k/N, ETA) off a terminal, a bar on one."""

import io

import pytest

from slimtrain.progress import Progress, format_duration


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _run(stream, total=4, **kwargs):
    with Progress(total, "sweep r (unstructured)", "level", stream=stream, **kwargs) as progress:
        for k in range(total):
            progress.step(f"0.{k}")
    return stream.getvalue()


def test_plain_lines_say_k_of_n_with_an_eta_and_a_total():
    lines = _run(io.StringIO(), every_s=0).splitlines()
    assert lines[0] == "sweep r (unstructured): level 1/4 0.0"
    assert all(f"level {k}/4 0.{k - 1};" in lines[k - 1] and "ETA" in lines[k - 1] for k in range(2, 5))
    assert lines[-1].startswith("sweep r (unstructured): 4/4 levels in ")
    assert "\r" not in "".join(lines)


def test_plain_lines_are_periodic():
    """Within the interval only the first and the last item are shown, then the total."""
    lines = _run(io.StringIO(), total=10, every_s=3600).splitlines()
    assert [line.split(":")[1].split()[:2] for line in lines[:2]] == [["level", "1/10"], ["level", "10/10"]]
    assert len(lines) == 3


def test_a_terminal_gets_a_bar_that_is_cleared():
    out = _run(Terminal())
    assert "\r" in out and "sweep r (unstructured)" in out and "level 1/4" not in out


def test_disabled_progress_prints_nothing():
    assert _run(io.StringIO(), enabled=False) == ""
    assert _run(Terminal(), enabled=False) == ""


def test_an_error_says_where_the_work_stopped():
    stream = io.StringIO()
    with pytest.raises(RuntimeError), Progress(3, "compare", "run", stream=stream, every_s=0) as progress:
        progress.step("a/seed0")
        progress.step("b/seed0")
        raise RuntimeError
    assert stream.getvalue().splitlines()[-1].startswith("compare: stopped after 1/3 runs in ")


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0s"), (42, "42s"), (185, "3m05s"), (3720, "1h02m")])
def test_durations_read_as_people_write_them(seconds, text):
    assert format_duration(seconds) == text
