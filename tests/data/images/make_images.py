#!/usr/bin/python3
"""Generates the small test images for tests/unit/test_imageio.c.

Run with Debian's /usr/bin/python3 (PIL 9.4, numpy); the outputs are
committed so the C tests need no Python.  Everything is procedural and tiny.

  gray.jpg            8-bit grayscale JPEG (horizontal ramp)
  cmyk.jpg/.rgb       CMYK JPEG (PIL writes an Adobe marker) + PIL's RGB decode
  rgb16.png           16-bit RGB PNG: R = x*1031, G = y*2053, B = 40000 (BE)
  gray16.png          16-bit gray PNG: v = x*2111
  palette.png         palette PNG with tRNS; pixel (x, y) = PALETTE[(x + y) % 4]
  la.png / rgba.png   gray+alpha, RGBA: alpha must be dropped
  orient_<n>.jpg      EXIF orientation n = 1..8; displayed image is always the
                      32x16 quadrant pattern of QUADS (4:4:4, q95)
  anim.webp           animated WebP, frame 1 red, frame 2 blue
  still.webp          lossless 24x16 WebP (same ramp as rgb16's high bytes)
  resize_src.png      61x47 noise; resize_<filter>_<w>x<h>.rgb = PIL's resize
"""
import io, os, struct, zlib
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def out(name):
    return os.path.join(HERE, name)


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_png16(path, arr, color_type):
    # PIL cannot write 16-bit RGB, so the file is assembled here (test data only)
    h, w = arr.shape[:2]
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
    data += png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")
    open(path, "wb").write(data)


# grayscale JPEG
g = np.tile((np.arange(64) * 4).astype(np.uint8), (48, 1))
Image.fromarray(g, "L").save(out("gray.jpg"), quality=95)

# CMYK JPEG from blocks of colour
rgb = np.zeros((16, 32, 3), np.uint8)
rgb[:, :16] = (200, 40, 30)
rgb[:, 16:] = (20, 120, 220)
Image.fromarray(rgb, "RGB").convert("CMYK").save(out("cmyk.jpg"), quality=95)
open(out("cmyk.rgb"), "wb").write(Image.open(out("cmyk.jpg")).convert("RGB").tobytes())

# 16-bit PNGs
yy, xx = np.mgrid[0:20, 0:30]
a16 = np.stack([xx * 1031, yy * 2053, np.full_like(xx, 40000)], -1).astype(np.uint16)
write_png16(out("rgb16.png"), a16, 2)
write_png16(out("gray16.png"), (xx * 2111).astype(np.uint16), 0)

# palette with transparency
PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 250, 10)]
p = Image.fromarray(((xx + yy) % 4).astype(np.uint8), "P")
p.putpalette([c for col in PALETTE for c in col])
p.save(out("palette.png"), transparency=bytes([0, 255, 128, 255]))

# alpha variants
la = np.stack([(xx * 8).astype(np.uint8), np.full(xx.shape, 7, np.uint8)], -1)
Image.fromarray(la, "LA").save(out("la.png"))
rgba = np.stack([(xx * 8), (yy * 12), np.full_like(xx, 99), (xx * 3)], -1).astype(np.uint8)
Image.fromarray(rgba, "RGBA").save(out("rgba.png"))

# EXIF orientations: stored = inverse of the transform exif_transpose applies
QUADS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]  # TL TR BL BR
canon = np.zeros((16, 32, 3), np.uint8)
canon[:8, :16], canon[:8, 16:], canon[8:, :16], canon[8:, 16:] = QUADS
canon_im = Image.fromarray(canon, "RGB")
T = Image.Transpose
inverse = {1: None, 2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM,
           5: T.TRANSPOSE, 6: T.ROTATE_90, 7: T.TRANSVERSE, 8: T.ROTATE_270}
from PIL import ImageOps
for o, inv in inverse.items():
    stored = canon_im if inv is None else canon_im.transpose(inv)
    exif = Image.Exif()
    exif[0x0112] = o
    stored.save(out("orient_%d.jpg" % o), quality=95, subsampling=0, exif=exif.tobytes())
    back = np.asarray(ImageOps.exif_transpose(Image.open(out("orient_%d.jpg" % o))).convert("RGB")).astype(int)
    assert back.shape == canon.shape and np.abs(back - canon).max() < 40, o

# WebP
frames = [Image.new("RGB", (24, 16), (255, 0, 0)), Image.new("RGB", (24, 16), (0, 0, 255))]
frames[0].save(out("anim.webp"), save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
still = np.stack([(xx[:16, :24] * 1031) >> 8, (yy[:16, :24] * 2053) >> 8, np.full((16, 24), 156)], -1).astype(np.uint8)
Image.fromarray(still, "RGB").save(out("still.webp"), lossless=True)

# PIL resize references (bit-exact targets for the resampler)
rng = np.random.default_rng(4)
src = rng.integers(0, 256, (47, 61, 3), dtype=np.uint8)
src_im = Image.fromarray(src, "RGB")
src_im.save(out("resize_src.png"))
for name, flt in (("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)):
    for (w, h) in ((20, 13), (61, 30), (130, 101)):
        open(out("resize_%s_%dx%d.rgb" % (name, w, h)), "wb").write(src_im.resize((w, h), flt).tobytes())
print("ok")
