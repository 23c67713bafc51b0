"""gausslift.progress: sparse newline-terminated lines when the stream is not a terminal; tqdm on one."""

import io

from gausslift.progress import LineProgress, progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_log_gets_a_line_every_ten_percent_and_no_carriage_returns():
    out = io.StringIO()
    for _ in progress(range(1000), desc="fit", file=out):
        pass
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert 9 <= len(lines) <= 11 and lines[-1].startswith("fit: 100% 1000/1000")
    assert len(text) < 1000


def test_manual_bar_with_postfix_and_time_based_lines():
    out = io.StringIO()
    bar = progress(total=None, desc="x", file=out, log_seconds=0.0)  # unknown total: time-based lines
    for i in range(3):
        bar.set_postfix(loss=f"{i:.1f}")
        bar.update(1)
    bar.close()
    bar.close()  # idempotent
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1].startswith("x: 3 it") and lines[-1].endswith("loss=2.0")
    assert isinstance(bar, LineProgress)


def test_disabled_bar_is_silent_and_terminal_gets_tqdm():
    out = io.StringIO()
    for _ in progress(range(50), file=out, disable=True):
        pass
    assert out.getvalue() == ""
    tty = _Tty()
    bar = progress(range(3), file=tty, desc="t")
    assert type(bar).__name__ == "tqdm"
    list(bar)
    assert "\r" in tty.getvalue()
