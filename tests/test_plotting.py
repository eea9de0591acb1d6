"""Tests of keymodels.plotting: fonts for CJK and emoji text where installed, quietly otherwise."""

from __future__ import annotations

import matplotlib
import pytest
from matplotlib import font_manager
from PIL import Image

from keymodels import plotting


@pytest.fixture
def fresh_fonts():
    """rcParams and the once-per-process font choice put back after the test."""
    plotting._add_installed_fonts.cache_clear()
    with matplotlib.rc_context():
        yield
    plotting._add_installed_fonts.cache_clear()


def test_fallback_fonts_are_added_only_where_installed(fresh_fonts, monkeypatch):
    real_findfont = font_manager.findfont
    dejavu = real_findfont("DejaVu Sans")

    def findfont(prop, fallback_to_default=True, **kwargs):
        # This machine "has" one CJK font; every other fallback font is missing.
        if prop.get_family() == ["Noto Sans CJK JP"]:
            return dejavu
        return real_findfont(prop, fallback_to_default=fallback_to_default, **kwargs)

    monkeypatch.setattr(font_manager, "findfont", findfont)
    matplotlib.rcParams["font.family"] = ["serif"]
    plotting.use_fallback_fonts()
    names = {"Noto Sans CJK JP", *font_manager.get_font_names()}
    expected = ["serif", *(f for f in plotting.FALLBACK_FONTS if f in names)]
    assert matplotlib.rcParams["font.family"] == expected


def test_plot_lines_with_a_cjk_and_emoji_title_is_quiet(fresh_fonts, tmp_path, recwarn):
    path = plotting.plot_lines(
        {"注意 (attention)": [(1, 90.0), (2, 80.0)], "😀 plain": [(1, 70.0), (2, 40.0)]},
        tmp_path / "lines.png", "长度", "accuracy %", title="精度と長さ 📈",
    )  # fmt: skip
    with Image.open(path) as im:
        assert im.format == "PNG"
    assert [str(w.message) for w in recwarn] == []
