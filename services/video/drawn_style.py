"""The drawn avatars' looks: one `Style` (a name, a description and a palette) per avatar the drawn backend offers.

Why apart: a new drawn avatar is a new palette, nothing else; the drawing code (`drawn_static`, `drawn_parts`) reads
colours only from a `Style`, so adding one means adding an entry to `STYLES` here and touching no drawing.
Pure data, no numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

Color = tuple[float, float, float]  # RGB, 0..255


@dataclass(frozen=True)
class Style:
    """The look of one drawn avatar."""

    name: str
    description: str
    background_top: Color
    background_bottom: Color
    skin: Color
    skin_shadow: Color
    blush: Color
    hair: Color
    hair_shadow: Color
    hair_highlight: Color
    iris: Color
    shirt: Color
    shirt_shadow: Color
    lips: Color
    lips_upper: Color


STYLES: dict[str, Style] = {
    style.name: style
    for style in (
        Style(
            name="drawn",
            description="Ada: a friendly drawn face with an auburn bob (CPU, real time)",
            background_top=(178, 212, 232),
            background_bottom=(112, 152, 190),
            skin=(246, 208, 178),
            skin_shadow=(222, 170, 140),
            blush=(240, 140, 140),
            hair=(140, 70, 40),
            hair_shadow=(105, 48, 28),
            hair_highlight=(190, 110, 70),
            iris=(70, 120, 90),
            shirt=(40, 150, 150),
            shirt_shadow=(28, 112, 115),
            lips=(208, 96, 102),
            lips_upper=(186, 80, 90),
        ),
        Style(
            name="drawn-kai",
            description="Kai: a drawn face with dark hair and a plum sweater (CPU, real time)",
            background_top=(226, 214, 190),
            background_bottom=(170, 150, 130),
            skin=(176, 122, 88),
            skin_shadow=(146, 96, 68),
            blush=(190, 90, 80),
            hair=(38, 30, 32),
            hair_shadow=(20, 16, 18),
            hair_highlight=(80, 66, 66),
            iris=(80, 52, 32),
            shirt=(110, 60, 120),
            shirt_shadow=(82, 42, 92),
            lips=(160, 80, 76),
            lips_upper=(136, 66, 64),
        ),
    )
}
DEFAULT_AVATAR = "drawn"
