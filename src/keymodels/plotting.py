"""PNG figures shared by the model families: attention heatmaps and metric-against-length lines.

Matplotlib runs with the Agg backend (no display needed); ``save_figure`` writes and frees a
figure for every module that draws one, and every function returns the PNG path. Titles and tick
labels come from file names and sentences, so CJK and emoji are drawn with a font that has them
where one is installed (``use_fallback_fonts``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import InvalidInputError

# Fonts tried after matplotlib's own (DejaVu Sans by default, which has no CJK or emoji glyphs),
# each used only where installed (e.g. Noto Sans CJK, from `apt-get install fonts-noto-cjk`).
# Not "Noto Color Emoji" or "Apple Color Emoji": bitmap-only fonts that FreeType cannot scale,
# so matplotlib fails to draw with them (matplotlib issue 12830).
FALLBACK_FONTS = (
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Source Han Sans",
    "WenQuanYi Zen Hei",
    "Noto Emoji",
    "Symbola",
)
# matplotlib warns once per character no font has, one warning per letter of a Chinese title;
# the box drawn instead is the whole story.
MISSING_GLYPH_WARNING = r"Glyph \d+ .* missing from font"


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use (matplotlib is an extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_fallback_fonts()
    return plt


def use_fallback_fonts() -> None:
    """Draw text with the installed fonts of :data:`FALLBACK_FONTS` where matplotlib's lack a
    glyph, and silence matplotlib's "Glyph … missing from font" warnings for the rest.

    Called by :func:`pyplot` and by every figure drawn without it, before the figure's text is
    created (matplotlib reads the font list then).
    """
    _add_installed_fonts()
    # On every call, not once: pytest and warnings.catch_warnings() put back the filters they
    # found on exit. filterwarnings replaces an equal filter, so the list does not grow.
    warnings.filterwarnings("ignore", message=MISSING_GLYPH_WARNING, category=UserWarning)


@functools.cache
def _add_installed_fonts() -> None:
    """Append the installed :data:`FALLBACK_FONTS` to ``rcParams["font.family"]``, once.

    matplotlib (3.6 and later) takes each character from the first family in that list that has
    it; a family that is not installed would log "font family not found" at every figure, so
    only installed ones are added.
    """
    import matplotlib
    from matplotlib import font_manager

    families = list(matplotlib.rcParams["font.family"])
    for name in FALLBACK_FONTS:
        if name in families:
            continue
        try:
            font_manager.findfont(
                font_manager.FontProperties(family=name), fallback_to_default=False
            )
        except ValueError:  # not installed
            continue
        families.append(name)
    matplotlib.rcParams["font.family"] = families


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG (creating the folder) and free it; pyplot keeps every open figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def _as_array(weights) -> np.ndarray:
    """A float array of attention weights given as a tensor (any device) or an array."""
    return np.asarray(
        weights.detach().cpu() if hasattr(weights, "detach") else weights, dtype=float
    )


def plot_alignment(
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    weights,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """A source × target heatmap of attention weights, tokens on the axes.

    Args:
        source_tokens: the N attended tokens (x axis).
        target_tokens: the T output tokens (y axis), one row each.
        weights: α, [T, N] (tensor or array); row t is where output t looked.
        path: where to write the PNG.
    """
    w = _as_array(weights)
    if w.shape != (len(target_tokens), len(source_tokens)):
        raise InvalidInputError(
            f"weights must be [target, source] = {(len(target_tokens), len(source_tokens))}; "
            f"got {w.shape}"
        )
    plt = pyplot()
    n, t = len(source_tokens), len(target_tokens)
    fig, ax = plt.subplots(figsize=(max(3.0, 0.45 * n + 1.8), max(2.5, 0.4 * t + 1.4)))
    im = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=max(float(w.max()), 1e-6), aspect="auto")
    ax.set_xticks(range(n), list(source_tokens), rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(t), list(target_tokens), fontsize=9)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_alignment_grid(
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    weights,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Cross-attention of every layer (rows) and head (columns): weights [L, H, T, N].

    Each panel is :func:`plot_alignment`'s heatmap in small; tokens label the outer axes only.
    """
    w = _as_array(weights)
    if w.ndim != 4 or w.shape[2:] != (len(target_tokens), len(source_tokens)):
        raise InvalidInputError(
            f"weights must be [layers, heads, target, source] with target, source = "
            f"{(len(target_tokens), len(source_tokens))}; got {w.shape}"
        )
    plt = pyplot()
    L, H, t, n = w.shape
    cell_w, cell_h = max(1.6, 0.22 * n + 0.6), max(1.4, 0.2 * t + 0.5)
    fig, axes = plt.subplots(L, H, figsize=(cell_w * H + 1.2, cell_h * L + 1.2), squeeze=False)
    for i in range(L):
        for j in range(H):
            ax = axes[i][j]
            ax.imshow(w[i, j], cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == L - 1:
                ax.set_xticks(range(n), list(source_tokens), rotation=90, fontsize=6)
            if j == 0:
                ax.set_yticks(range(t), list(target_tokens), fontsize=6)
                ax.set_ylabel(f"layer {i + 1}", fontsize=8)
            if i == 0:
                ax.set_title(f"head {j + 1}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_lines(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logy: bool = False,
) -> Path:
    """One line per named series of (x, y) points, e.g. accuracy against input length per model."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, points in series.items():
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", ms=4, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
