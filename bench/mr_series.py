"""The series of the benchmark sessions: an MR research session as a scanner exports it."""

from __future__ import annotations

# (number, description, share of the files), in the proportions of a 5,000-file session.
SERIES = (
    (1, "localizer", 9),
    (2, "AAHead_Scout", 128),
    (3, "t1_mprage_sag", 192),
    (4, "t2_spc_sag", 192),
    (5, "gre_field_map", 132),
    (6, "ep2d_bold_rest", 3000),
    (7, "ep2d_diff_mddw_30", 990),
    (8, "t2_flair_tra", 50),
    (9, "tof_fl3d_tra", 307),
)


def series_sizes(files: int) -> list[tuple[int, str, int]]:
    """SERIES scaled to `files` images in total (every series keeps at least one)."""
    total = sum(count for _, _, count in SERIES)
    sizes = [max(1, count * files // total) for _, _, count in SERIES]
    sizes[SERIES.index(max(SERIES, key=lambda s: s[2]))] += files - sum(sizes)
    return [(number, name, size) for (number, name, _), size in zip(SERIES, sizes, strict=True)]
