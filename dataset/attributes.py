"""The NATIVE (Sharif_PAR) attribute lists and groups: the one place they are written down.

The YAML configs name these lists; the categorical loss, the metrics' grouped decoding and the
video labels all read the groups from the config, which copies them from here
(``configs/native.yaml`` is checked against this module by the tests).
"""
from __future__ import annotations

U_COLOURS = ["U_black", "U_blue", "U_brown", "U_green", "U_grey", "U_orange", "U_pink", "U_purple",
             "U_red", "U_white", "U_yellow", "////U_Others////"]
L_COLOURS = ["L_black", "L_blue", "L_brown", "L_green", "L_grey", "L_orange", "L_pink", "L_purple",
             "L_red", "L_white", "L_yellow", "////L_Others////"]

# The 37 attributes of the seed study, in its order.
NATIVE_37 = (["Age_young", "Age_adult", "Age_old", "Gender_female", "Hair_short", "Hair_long", "Hair_bald",
              "Upper_short"] + U_COLOURS + L_COLOURS + ["Backpack", "Bag", "Glasses", "Sunglasses", "Hat"])
# The full release adds culture-specific garments and patterns.
NATIVE_EXTRA = ["Jeans", "Chador", "Manto", "Shawl", "Maghnae", "Roosari", "Plaid", "Stripped", "Mask"]
NATIVE_46 = NATIVE_37 + NATIVE_EXTRA

# [name, kind, attrs...]: exclusive = exactly one is on; optional = at most one is on.
NATIVE_GROUPS = [
    ["age", "exclusive", "Age_young", "Age_adult", "Age_old"],
    ["hair", "exclusive", "Hair_short", "Hair_long", "Hair_bald"],
    ["upper_colour", "exclusive", *U_COLOURS],
    ["lower_colour", "exclusive", *L_COLOURS],
    ["eyewear", "optional", "Glasses", "Sunglasses"],
]
