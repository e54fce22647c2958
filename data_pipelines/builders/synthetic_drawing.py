"""Drawing for the synthetic demo set: people, cameras, one image at a time.

Identity lives in a combination of attributes drawn from small palettes
(several people share any one). Cameras change what a colour histogram sees
(background, lighting, colour cast, blur, scale, front or back view), and
every image gets its own shift, scale, mirror, clutter, noise and light ramp,
so whole-image pixel or histogram matchers stay far below one that learns
where the person is. `render_image` is a pure function of its arguments.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# People are drawn at twice the output size and box-filtered down, which
# anti-aliases the polygon edges.
_SUPERSAMPLE = 2
# Per-image pose: horizontal and vertical shift (fractions of the image),
# scale, and how often a pole stands in front of the person.
SHIFT_X, SHIFT_Y, SCALE_JITTER, P_POLE = 0.14, 0.06, 0.1, 0.35
# Light falling off across the image (a linear ramp in a random direction,
# up to this fraction): no global correction removes it.
LIGHT_RAMP = 0.4
# Stripe and check period, as a fraction of the person's height.
PATTERN_PERIOD = 0.045

_SKIN = ((241, 200, 170), (224, 172, 135), (176, 120, 85), (110, 72, 50))
_HAIR = ((25, 20, 18), (90, 55, 30), (200, 160, 90), (150, 150, 150),
         (160, 50, 30))
_CLOTH = ((200, 30, 35), (30, 45, 110), (110, 170, 220), (40, 130, 60),
          (235, 200, 40), (235, 235, 235), (30, 30, 30), (130, 130, 135),
          (110, 50, 140), (240, 130, 30))
_LOWER = ((25, 25, 30), (45, 65, 110), (120, 120, 125), (190, 170, 120),
          (100, 65, 40), (225, 225, 220))
_SHOES = ((20, 20, 20), (235, 235, 235), (110, 70, 40))
_PATTERNS = ("plain", "hstripes", "vstripes", "checks", "logo")
_LOGOS = ("circle", "triangle", "square", "diamond")


@dataclasses.dataclass(frozen=True)
class _Identity:
  skin: int
  hair: int
  long_hair: bool
  hat: Optional[tuple[str, int]]      # (style, colour index) or None.
  shirt: int
  pattern: str
  pattern_colour: int
  logo: str
  long_sleeves: bool
  lower: str                          # "trousers", "shorts" or "skirt".
  lower_colour: int
  shoes: int
  bag: Optional[tuple[str, int]]      # (kind, colour index) or None.
  height: float
  build: float
  leg_ratio: float

  def key(self) -> tuple:
    """The attributes a person can be told apart by; unique per identity."""
    return (self.shirt, self.pattern,
            self.pattern_colour if self.pattern != "plain" else -1,
            self.lower, self.lower_colour, self.hair, self.hat, self.bag)


@dataclasses.dataclass(frozen=True)
class _Camera:
  wall: np.ndarray        # (3,) float, background base colours.
  floor: np.ndarray
  texture: str            # "tiles", "stripes" or "blotches".
  horizon: float          # fraction of the height where the floor starts.
  gain: float
  contrast: float
  cast: np.ndarray        # (3,) per-channel multipliers.
  blur: float             # Gaussian radius in output pixels.
  noise: np.ndarray       # (2H, 2W, 3) int16 noise field, cropped per image.
  scale: float            # person height as a fraction of the image height.
  p_front: float          # probability a person faces this camera.


def _sample_identity(rng: np.random.Generator) -> _Identity:
  n_cloth = len(_CLOTH)
  shirt = int(rng.integers(n_cloth))
  pattern_colour = int((shirt + rng.integers(1, n_cloth)) % n_cloth)
  hat = None
  if rng.random() < 0.25:
    hat = (str(rng.choice(["cap", "beanie"])), int(rng.integers(n_cloth)))
  bag = None
  if rng.random() < 0.45:
    bag = (str(rng.choice(["backpack", "shoulder"])),
           int(rng.integers(n_cloth)))
  return _Identity(
      skin=int(rng.integers(len(_SKIN))), hair=int(rng.integers(len(_HAIR))),
      long_hair=bool(rng.random() < 0.35), hat=hat, shirt=shirt,
      pattern=str(rng.choice(_PATTERNS, p=[.36, .16, .12, .12, .24])),
      pattern_colour=pattern_colour, logo=str(rng.choice(_LOGOS)),
      long_sleeves=bool(rng.random() < 0.5),
      lower=str(rng.choice(["trousers", "shorts", "skirt"], p=[.65, .2, .15])),
      lower_colour=int(rng.integers(len(_LOWER))),
      shoes=int(rng.integers(len(_SHOES))), bag=bag,
      height=float(rng.uniform(0.88, 1.0)),
      build=float(rng.uniform(0.85, 1.15)),
      leg_ratio=float(rng.uniform(0.44, 0.5)))


def sample_identities(seed: int, count: int) -> list[_Identity]:
  """Draws `count` people whose attribute combinations are all different."""
  rng = np.random.default_rng([seed, 1])
  people, seen = [], set()
  while len(people) < count:
    person = _sample_identity(rng)
    if person.key() not in seen:
      seen.add(person.key())
      people.append(person)
  return people


def _muted_colour(rng: np.random.Generator, low: float,
                  high: float) -> np.ndarray:
  """A greyish colour: streets and walls are rarely saturated."""
  return rng.uniform(low, high) + rng.uniform(-30, 30, 3)


def sample_camera(rng: np.random.Generator, index: int,
                   image_size: tuple[int, int]) -> _Camera:
  """Camera `index`; walking direction, scale and blur rotate over cameras."""
  # A colour cast of fixed strength in a random hue direction: drawing the
  # strength too made some seeds' cameras nearly alike (a much easier set).
  hue = rng.standard_normal(3)
  hue -= hue.mean()
  cast = 1.0 + 0.2 * hue / np.linalg.norm(hue)
  return _Camera(
      wall=_muted_colour(rng, 60, 210), floor=_muted_colour(rng, 50, 180),
      texture=("tiles", "stripes", "blotches")[int(rng.integers(3))],
      horizon=float(rng.uniform(0.45, 0.75)),
      gain=float(rng.uniform(0.75, 1.2)),
      contrast=float(rng.uniform(0.7, 1.1)), cast=cast.astype(np.float32),
      blur=(0.2, 0.8, 0.5)[index % 3] + float(rng.uniform(-0.2, 0.2)),
      noise=np.round(rng.uniform(2.0, 8.0) * rng.standard_normal(
          (2 * image_size[0], 2 * image_size[1], 3))).astype(np.int16),
      scale=(0.88, 0.74, 0.81)[index % 3] + float(rng.uniform(-0.02, 0.02)),
      p_front=(0.85, 0.15, 0.5)[index % 3])


def _background(rng: np.random.Generator, cam: _Camera, height: int,
                width: int) -> np.ndarray:
  """A (height, width, 3) float32 background in the camera's style."""
  rows = np.arange(height, dtype=np.float32)[:, None, None]
  cols = np.arange(width, dtype=np.float32)[None, :, None]
  horizon = int(height * (cam.horizon + rng.uniform(-0.05, 0.05)))
  img = np.where(rows < horizon, cam.wall, cam.floor).astype(np.float32)
  img = np.broadcast_to(img, (height, width, 3)).copy()
  if cam.texture == "tiles":
    period = height / rng.uniform(5, 9)
    offset = rng.uniform(0, period)
    lines = ((rows + offset) % period < 1) | ((cols + offset) % period < 1)
    img = np.where(lines & (rows >= horizon), img * 0.6, img)
  elif cam.texture == "stripes":
    period = width / rng.uniform(2, 4)
    phase = rng.uniform(0, period)
    img = np.where(((cols + phase) % period) < period / 2, img * 0.75, img)
  # Low-frequency blotches: a tiny random image scaled up.
  small = np.clip(rng.uniform(0, 255, (4, 3, 1)) +
                  rng.uniform(-40, 40, (4, 3, 3)), 0, 255).astype(np.uint8)
  blotch = np.asarray(Image.fromarray(small).resize(
      (width, height), Image.BICUBIC), np.float32)
  strength = 0.45 if cam.texture == "blotches" else 0.15
  return img * (1 - strength) + blotch * strength


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator,
                  height: int, width: int) -> None:
  """Background objects (signs, bins, bits of other people) near the edges."""
  for _ in range(int(rng.integers(0, 4))):
    w, h = rng.uniform(0.1, 0.35) * width, rng.uniform(0.1, 0.4) * height
    x = rng.choice([rng.uniform(-0.2, 0.15), rng.uniform(0.65, 1.0)]) * width
    y = rng.uniform(0.0, 0.9) * height
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    if rng.random() < 0.5:
      draw.rectangle([x, y, x + w, y + h], fill=colour)
    else:
      draw.ellipse([x, y, x + w, y + h], fill=colour)


def _stripe_mask(size: tuple[int, int], period: float, pattern: str,
                 region: Image.Image) -> Image.Image:
  """An "L" mask of stripes or checks, limited to `region` (an "L" mask)."""
  width, height = size
  rows = np.arange(height)[:, None] % period < period / 2
  cols = np.arange(width)[None, :] % period < period / 2
  on = {"hstripes": rows, "vstripes": cols, "checks": rows ^ cols}[pattern]
  return Image.fromarray(np.where(on, np.asarray(region), 0).astype(np.uint8))


def _draw_person(layer: Image.Image, person: _Identity, rng: np.random.Generator,
                 centre_x: float, top: float, unit: float,
                 front: bool) -> None:
  """Draws `person` onto the RGBA `layer`; `unit` is their height in pixels."""
  draw = ImageDraw.Draw(layer)

  def pt(x: float, y: float) -> tuple[float, float]:
    return (centre_x + x * unit, top + y * unit)

  def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [*pt(x0, y0), *pt(x1, y1)]

  skin, hair = _SKIN[person.skin], _HAIR[person.hair]
  shirt, lower = _CLOTH[person.shirt], _LOWER[person.lower_colour]
  sw, hw = 0.12 * person.build, 0.10 * person.build    # shoulder/hip halves.
  y_hip, y_foot = 0.96 - person.leg_ratio, 0.965
  y_knee = (y_hip + y_foot) / 2
  stride, swing = rng.uniform(-0.045, 0.045), rng.uniform(-0.05, 0.05)
  limb = int(max(2, 0.06 * person.build * unit))

  if person.long_hair:  # Hair falling behind the shoulders.
    draw.rectangle(box(-0.065, 0.06, 0.065, 0.23), fill=hair)
  # Legs, each hip to foot; the skin shows below the knee in shorts/skirts.
  thigh = skin if person.lower == "skirt" else lower
  shin = lower if person.lower == "trousers" else skin
  for side in (-1, 1):
    hip_x, foot_x = side * hw / 2, side * (hw / 2 + stride)
    knee = pt((hip_x + foot_x) / 2, y_knee)
    draw.line([pt(hip_x, y_hip), knee], fill=thigh, width=limb + 2)
    draw.line([knee, pt(foot_x, y_foot)], fill=shin, width=limb)
    draw.ellipse(box(foot_x - 0.035, y_foot - 0.015, foot_x + 0.035,
                     y_foot + 0.02), fill=_SHOES[person.shoes])
  # A skirt, or the waistband of trousers and shorts.
  hem_x, hem_y = (1.5 * hw, y_knee) if person.lower == "skirt" else (
      hw, y_hip + 0.04)
  draw.polygon([pt(-hw, y_hip - 0.02), pt(hw, y_hip - 0.02), pt(hem_x, hem_y),
                pt(-hem_x, hem_y)], fill=lower)
  # Arms: sleeve from the shoulder, skin below the elbow for short sleeves.
  for side in (-1, 1):
    hand_x, hand_y = side * (sw + 0.03 + swing), y_hip + 0.03
    elbow = pt((side * (sw - 0.01) + hand_x) / 2, (0.18 + hand_y) / 2)
    draw.line([pt(side * (sw - 0.01), 0.18), elbow], fill=shirt, width=limb)
    draw.line([elbow, pt(hand_x, hand_y)], width=limb,
              fill=shirt if person.long_sleeves else skin)
    draw.ellipse(box(hand_x - 0.03, hand_y - 0.03, hand_x + 0.03,
                     hand_y + 0.03), fill=skin)
  torso = [pt(-sw, 0.16), pt(sw, 0.16), pt(hw, y_hip), pt(-hw, y_hip)]
  draw.polygon(torso, fill=shirt)
  draw.ellipse(box(-sw - 0.02, 0.155, -sw + 0.04, 0.21), fill=shirt)
  draw.ellipse(box(sw - 0.04, 0.155, sw + 0.02, 0.21), fill=shirt)
  pattern_colour = _CLOTH[person.pattern_colour]
  if person.pattern in ("hstripes", "vstripes", "checks"):
    torso_mask = Image.new("L", layer.size, 0)
    ImageDraw.Draw(torso_mask).polygon(torso, fill=255)
    layer.paste((*pattern_colour, 255), (0, 0) + layer.size, _stripe_mask(
        layer.size, max(2.0, PATTERN_PERIOD * unit), person.pattern,
        torso_mask))
  elif person.pattern == "logo" and front:
    circle = (*pt(0.0, 0.27), 0.045 * unit)
    if person.logo == "circle":
      draw.ellipse(box(-0.045, 0.225, 0.045, 0.315), fill=pattern_colour)
    else:  # Sides and rotation of a triangle, a square and a diamond.
      sides, rotation = {"triangle": (3, 0), "square": (4, 0),
                         "diamond": (4, 45)}[person.logo]
      draw.regular_polygon(circle, sides, rotation, fill=pattern_colour)
  if person.bag:
    kind, bag_colour = person.bag[0], _CLOTH[person.bag[1]]
    if kind == "backpack" and not front:
      draw.rounded_rectangle(box(-0.8 * sw, 0.19, 0.8 * sw, 0.42),
                             radius=0.02 * unit, fill=bag_colour)
    elif kind == "backpack":  # Straps over the shoulders.
      for side in (-1, 1):
        draw.line([pt(side * 0.6 * sw, 0.16), pt(side * 0.6 * sw, 0.36)],
                  fill=bag_colour, width=max(1, limb // 2))
    else:  # Shoulder bag: diagonal strap and a bag at the hip.
      draw.line([pt(-sw * 0.8, 0.17), pt(sw * 0.9, y_hip - 0.02)],
                fill=bag_colour, width=max(1, limb // 2))
      draw.rectangle(box(sw * 0.7, y_hip - 0.06, sw * 0.7 + 0.09, y_hip + 0.04),
                     fill=bag_colour)
  # Neck, head, hair (covering the head from behind), hat.
  draw.rectangle(box(-0.025, 0.12, 0.025, 0.17), fill=skin)
  draw.ellipse(box(-0.05, 0.01, 0.05, 0.14), fill=skin)
  if front:
    draw.chord(box(-0.053, 0.0, 0.053, 0.1), 180, 360, fill=hair)
  else:
    draw.ellipse(box(-0.052, 0.005, 0.052, 0.142), fill=hair)
    if person.long_hair:
      draw.rectangle(box(-0.06, 0.07, 0.06, 0.23), fill=hair)
  if person.hat:
    style, colour = person.hat[0], _CLOTH[person.hat[1]]
    if style == "cap":
      draw.chord(box(-0.055, -0.01, 0.055, 0.09), 180, 360, fill=colour)
      brim = (0.0, 0.09) if front else (-0.02, 0.02)
      draw.rectangle(box(-0.055 + brim[0], 0.035, 0.055 + brim[1], 0.05),
                     fill=colour)
    else:
      draw.chord(box(-0.058, -0.015, 0.058, 0.12), 180, 360, fill=colour)


def render_image(person: _Identity, cam: _Camera, rng: np.random.Generator,
                 image_size: tuple[int, int]) -> Image.Image:
  """One photo of `person` by `cam`, as an RGB image of `image_size` (H, W)."""
  height, width = image_size
  ch, cw = height * _SUPERSAMPLE, width * _SUPERSAMPLE
  canvas = Image.fromarray(np.clip(_background(rng, cam, height, width), 0,
                                   255).astype(np.uint8)).convert("RGBA")
  _draw_clutter(ImageDraw.Draw(canvas), rng, height, width)
  # Only the person is supersampled: the box filter premultiplies alpha, so
  # the anti-aliased edges composite cleanly onto the background.
  unit = ch * cam.scale * person.height * rng.uniform(
      1 - SCALE_JITTER, 1 + SCALE_JITTER)
  centre_x = cw / 2 + rng.uniform(-SHIFT_X, SHIFT_X) * cw
  top = (ch - unit) / 2 + rng.uniform(-SHIFT_Y, SHIFT_Y) * ch
  layer = Image.new("RGBA", (cw, ch), (0, 0, 0, 0))
  _draw_person(layer, person, rng, centre_x, top, unit,
               front=bool(rng.random() < cam.p_front))
  if rng.random() < 0.5:
    layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  canvas = Image.alpha_composite(canvas, layer.resize((width, height),
                                                      Image.BOX))
  if rng.random() < P_POLE:  # A pole in front of the person.
    x = rng.uniform(0.05, 0.9) * width
    colour = tuple(int(c) for c in rng.integers(0, 256, 3)) + (255,)
    ImageDraw.Draw(canvas).rectangle([x, 0, x + 0.06 * width, height],
                                     fill=colour)
  img = canvas.convert("RGB")
  radius = cam.blur + rng.uniform(0.0, 0.3)
  if radius > 0.1:
    img = img.filter(ImageFilter.GaussianBlur(radius))
  # Lighting is a per-channel tone curve (contrast about mid-grey, gain,
  # colour cast) applied as a lookup table; then sensor noise, cut at a
  # random offset from the camera's own noise field.
  contrast = cam.contrast * rng.uniform(0.9, 1.1)
  gain = cam.gain * rng.uniform(0.85, 1.15)
  levels = np.arange(256, dtype=np.float32)[:, None]
  curve = ((levels - 128.0) * contrast + 128.0) * (gain * cam.cast)
  img = img.point(np.clip(curve + 0.5, 0, 255).astype(np.uint8).T.ravel()
                  .tolist())
  dy, dx = int(rng.integers(height + 1)), int(rng.integers(width + 1))
  pixels = np.asarray(img, np.int16) + cam.noise[dy:dy + height, dx:dx + width]
  if LIGHT_RAMP:
    angle = rng.uniform(0, 2 * np.pi)
    rows = np.linspace(-1, 1, height)[:, None, None]
    cols = np.linspace(-1, 1, width)[None, :, None]
    ramp = 1 + LIGHT_RAMP * rng.uniform(0.5, 1.0) * (
        np.cos(angle) * rows + np.sin(angle) * cols)
    pixels = pixels * ramp
  return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
