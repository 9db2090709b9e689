/* camserve image I/O: decode uploads, turn them into model-ready tensors the
 * way torchvision does, draw Grad-CAM overlays, encode results.
 *
 * Decoding picks the format from magic bytes (JPEG, PNG, WebP), checks the
 * configured limits from the header before any pixel is decoded, and always
 * produces 8-bit interleaved RGB.  JPEGs are decoded in the DCT domain
 * straight to the smallest libjpeg-turbo scale that still covers what the
 * caller needs, so a 4000x3000 photo for a 224-pixel model never exists at
 * full resolution in memory.
 *
 * Preprocessing reproduces torchvision's Resize(256) -> CenterCrop(224) ->
 * ToTensor -> Normalize on PIL images: the resampler uses PIL's filters,
 * support scaling, coefficient rounding and fixed-point arithmetic, so a
 * full-resolution decode gives PIL's bytes exactly (see docs/images.md).
 *
 * Ownership: every cs_image filled by this module owns its pixel buffer;
 * release it with cs_img_free().  Encoded buffers are malloc()ed and belong to
 * the caller (free()).  Outputs are written only on success.
 *
 * Thread-safety: every function is reentrant; nothing here keeps global
 * mutable state (colormap tables are const). */
#ifndef CAMSERVE_IMAGEIO_H
#define CAMSERVE_IMAGEIO_H

#include "camserve/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- images ------------------------------------------------------------ */

typedef struct cs_image {
    int width, height;
    int channels;      /* 3 (RGB) for everything except a gray heatmap (1) */
    uint8_t *rgb;      /* owned: height rows of width*channels bytes, no padding */
    /* Size of the full-resolution image (after EXIF orientation) before any
     * DCT-domain downscale; equal to width/height when none happened. */
    int orig_width, orig_height;
} cs_image;

/* Frees the pixels and zeroes the struct; NULL or an empty image is fine. */
void cs_img_free(cs_image *img);

typedef enum cs_img_format {
    CS_IMG_FORMAT_UNKNOWN = 0,
    CS_IMG_FORMAT_JPEG,
    CS_IMG_FORMAT_PNG,
    CS_IMG_FORMAT_WEBP
} cs_img_format;

/* Format from the first bytes; never reads past len. */
cs_img_format cs_img_sniff(const void *buf, size_t len);
const char *cs_img_format_name(cs_img_format f); /* "jpeg", "png", "webp", "unknown" */
/* "png"/"jpeg"/"jpg"/"webp" (case-insensitive) -> format; CS_EINVAL otherwise. */
cs_status cs_img_format_parse(const char *name, cs_img_format *out, cs_error *err);

typedef struct cs_img_limits {
    size_t max_bytes;   /* encoded size; default 25 MB */
    int64_t max_pixels; /* width*height from the header; default 50 MP */
} cs_img_limits;

cs_img_limits cs_img_limits_default(void);

/* Decodes an encoded image into RGB8.
 *
 * need_w/need_h: the smallest width/height (after EXIF orientation) the
 * caller will use; JPEGs are then decoded at the smallest DCT scale
 * (1/8 .. 1) whose output is still at least that large.  0, 0 means full
 * size.  lim may be NULL for the defaults.
 *
 * Errors: CS_ELIMIT (too many bytes or pixels, checked before decoding),
 * CS_EFORMAT with a message starting "invalid image: " for unknown formats,
 * corrupt or truncated data (libjpeg warnings count as errors: no partially
 * decoded image is ever returned), CS_ENOMEM.
 *
 * Colour handling: gray, CMYK/YCCK (Adobe-inverted or not), palette, 16-bit
 * and gray+alpha are converted to RGB8 as PIL's convert("RGB") would; alpha
 * is dropped, not composited (what PIL does); no gamma or ICC handling.
 * EXIF orientation (JPEG APP1) is applied to the pixels.  Animated WebP:
 * the first frame, composited on its canvas. */
cs_status cs_img_decode(const void *buf, size_t len, const cs_img_limits *lim, int need_w,
                        int need_h, cs_image *out, cs_error *err);

/* Reads a whole file (refusing more than lim->max_bytes) and decodes it. */
cs_status cs_img_load(const char *path, const cs_img_limits *lim, int need_w, int need_h,
                      cs_image *out, cs_error *err);
/* Reads a whole file into a malloc()ed buffer (the caller frees it); more
 * than max_bytes is CS_ELIMIT.  For callers that look at the bytes before
 * choosing a decoder (the CLI's GPU image path). */
cs_status cs_img_read_file(const char *path, size_t max_bytes, uint8_t **out, size_t *len,
                           cs_error *err);

/* EXIF orientation (1..8) found in a JPEG's APP1 segment, 1 when absent or
 * malformed.  Exposed for tests and the fuzzer. */
int cs_img_jpeg_orientation(const void *buf, size_t len);

/* ---- preprocessing ----------------------------------------------------- */

typedef enum cs_img_interp {
    CS_IMG_INTERP_BILINEAR = 0, /* PIL BILINEAR: triangle, support 1 */
    CS_IMG_INTERP_BICUBIC       /* PIL BICUBIC: Keys a=-0.5, support 2 */
} cs_img_interp;

typedef enum cs_img_order { CS_IMG_ORDER_RGB = 0, CS_IMG_ORDER_BGR } cs_img_order;

typedef struct cs_preproc {
    int resize;           /* shorter side after resizing (torchvision Resize(int));
                           * 0: no resize */
    int resize_w, resize_h; /* both > 0: Resize((h, w)), aspect not kept; wins
                             * over resize */
    int crop_w, crop_h;   /* center crop = tensor size; zero-padded if larger */
    cs_img_interp interp;
    float mean[3], std[3]; /* per channel of the output order */
    float scale;           /* pixel value multiplier before mean/std (1/255) */
    cs_img_order order;
} cs_preproc;

/* ImageNet: resize 256, crop 224, bilinear, RGB, mean 0.485/0.456/0.406,
 * std 0.229/0.224/0.225, scale 1/255. */
cs_preproc cs_img_preproc_default(void);

/* What to pass as need_w/need_h to cs_img_decode for this config.  It asks
 * for twice the resize size: libjpeg's scaled IDCT is a sharper low-pass than
 * PIL's antialiasing filter, and with only 1x margin the darknet photos miss
 * the parity bound (docs/images.md has the numbers). */
void cs_img_preproc_need(const cs_preproc *p, int *need_w, int *need_h);

/* Checks a config (positive sizes, std != 0, ...); CS_EINVAL with a message. */
cs_status cs_img_preproc_validate(const cs_preproc *p, cs_error *err);

/* Resized size (as torchvision computes it from the full-resolution size) and
 * the center-crop window in that resized image (may start negative when
 * padding).  Deterministic, shared by preprocess and overlay. */
void cs_img_preproc_geometry(const cs_preproc *p, int orig_w, int orig_h, int *rw, int *rh,
                             int *crop_x, int *crop_y);

/* The crop window in the image's own pixel coordinates (x0, y0, x1, y1), for
 * placing a CAM computed on the tensor back onto the picture. */
void cs_img_preproc_crop_box(const cs_preproc *p, const cs_image *img, float box[4]);

/* Resize + center crop into crop_h x crop_w x 3 uint8 (HWC, RGB): the PIL
 * image torchvision would hold before ToTensor.  Only the pixels inside the
 * crop window are resampled.  out is allocated here (cs_img_free). */
cs_status cs_img_preprocess_u8(const cs_image *img, const cs_preproc *p, cs_image *out,
                               cs_error *err);

/* The model input: out_chw must hold 3*crop_h*crop_w floats, written as
 * ((v*scale) - mean[c]) / std[c] in the configured channel order. */
cs_status cs_img_preprocess(const cs_image *img, const cs_preproc *p, float *out_chw,
                            cs_error *err);

/* PIL-compatible antialiased resize of a whole image (display sizes). */
cs_status cs_img_resize(const cs_image *img, int w, int h, cs_img_interp interp, cs_image *out,
                        cs_error *err);

/* The normalisation of cs_img_preprocess as a table: lut[c][v] is output
 * channel c's value for byte v of source channel (order == BGR ? 2 - c : c).
 * Another executor (the GPU, gpuprep.h) uses it to give the same floats. */
void cs_img_preproc_lut(const cs_preproc *p, float lut[3][256]);

/* ---- resampling plans for other executors ------------------------------ */

/* The integer plan of one PIL resample -- what cs_img_resize and the
 * preprocessing compute -- for an executor outside this module that must
 * produce the same bytes (the GPU: src/cuda/gpuprep_math.h).  It covers the
 * output window [x0,x1) x [y0,y1) of an rw x rh resize of box (in source
 * pixels) of a sw x sh source:
 *
 *   horizontal pass, every source row r in [ylo, yhi), output column i < ow:
 *     tmp[r - ylo][i] = clip8(2^21 + sum over t < hk of src[r][hfirst[i] + t] * hw[i*hk + t])
 *   vertical pass, output row j < oh:
 *     out[j][i] = clip8(2^21 + sum over t < vn[j] of tmp[vfirst[j] - ylo + t][i] * vw[j*vk + t])
 *
 * per channel, where clip8(v) is v >> 22 saturated to 0..255.  Every
 * horizontal window lies inside the row (hfirst[i] + hk <= sw) and every
 * vertical one inside [ylo, yhi).  Ownership: the arrays are one block owned
 * by the struct; release it with cs_img_taps_free. */
typedef struct cs_img_taps {
    int ow, oh;       /* output window */
    int hk, vk;       /* weights per output: every column uses hk, row j vn[j] <= vk */
    int ylo, yhi;     /* source rows the horizontal pass covers */
    int32_t *hfirst;  /* ow */
    int32_t *hw;      /* ow * hk */
    int32_t *vfirst;  /* oh */
    int32_t *vn;      /* oh */
    int32_t *vw;      /* oh * vk */
} cs_img_taps;

cs_status cs_img_resample_taps(int sw, int sh, const float box[4], int rw, int rh, int x0, int x1,
                               int y0, int y1, cs_img_interp interp, cs_img_taps *out,
                               cs_error *err);
void cs_img_taps_free(cs_img_taps *t); /* NULL or a zeroed struct is fine */

/* Parses the sidecar / metadata JSON (keys in docs/images.md) on top of what
 * *out already holds, so callers start from cs_img_preproc_default().
 * labels_out (optional): receives a malloc()ed copy of "labels" or NULL.
 * Unknown keys are ignored; wrong types are CS_EINVAL. */
cs_status cs_img_preproc_from_json(const char *json_text, cs_preproc *out, char **labels_out,
                                   cs_error *err);

/* Config for a model, without depending on the engine: model_path is
 * cs_model_path(m) (may be "" or NULL), metadata_json is
 * cs_model_metadata(m, "camserve.preprocess") (may be NULL), input_hw the
 * model's input H and W (<= 0 when dynamic).  Order: "<model minus .onnx>.json"
 * sidecar if it exists, else the metadata, else defaults; crop defaults to
 * the model's input size and resize to crop/0.875 when not configured.
 * labels_out (optional) receives a malloc()ed path resolved against the
 * model's folder, or NULL.  source_out (optional) names what was used
 * ("sidecar", "metadata", "defaults"; static string). */
cs_status cs_img_preproc_for_model(const char *model_path, const char *metadata_json,
                                   int input_h, int input_w, cs_preproc *out, char **labels_out,
                                   const char **source_out, cs_error *err);

/* A labels file's text (one label per line, index = line number; "\n" or
 * "\r\n"; a last line without a newline counts, a trailing empty one does
 * not), split in place: *names (malloc()ed, the caller frees it; text must
 * outlive it) gets *n pointers into text.  Every label must be UTF-8 --
 * labels go into JSON answers, where jansson would drop anything else --
 * else CS_EFORMAT "labels: line N is not UTF-8"; CS_ENOMEM.  Used by the
 * CLI and the server alike. */
cs_status cs_img_labels_split(char *text, char ***names, int *n, cs_error *err);

/* ---- overlays ------------------------------------------------------------ */

typedef enum cs_img_colormap {
    CS_IMG_CMAP_JET = 0, /* cv2.COLORMAP_JET, byte-exact */
    CS_IMG_CMAP_TURBO,   /* Google's polynomial approximation */
    CS_IMG_CMAP_VIRIDIS, /* matplotlib, degree-6 minimax fit (max err < 1/255) */
    CS_IMG_CMAP_INFERNO,
    CS_IMG_CMAP_GRAY
} cs_img_colormap;

cs_status cs_img_colormap_parse(const char *name, cs_img_colormap *out, cs_error *err);
const char *cs_img_colormap_name(cs_img_colormap c);
/* 256 RGB triples (768 bytes), static storage. */
const uint8_t *cs_img_colormap_lut(cs_img_colormap c);

/* ---- lending threads --------------------------------------------------- */

/* Threads a caller lends to the overlay and the PNG encoder (the service
 * lends its helper team; imageio starts no threads of its own).
 * run(ctx, n, fn, arg) must call fn(arg, i) once for every i in [0, n), on
 * any threads, and return when all have returned.  ways (at most
 * CS_IMG_PAR_MAX) is how many parts to split the work into; a NULL
 * cs_img_par, a NULL run or ways <= 1 keeps it on the calling thread, and
 * small images are not split.  The overlay is the same bytes however it is
 * split; a PNG split N ways holds the same pixels in a stream 2-6 %
 * larger (see cs_img_encode_png). */
#define CS_IMG_PAR_MAX 16
typedef struct cs_img_par {
    int ways;
    void (*run)(void *ctx, int n, void (*fn)(void *arg, int i), void *arg);
    void *ctx;
} cs_img_par;

/* Blends a CAM onto img, as pytorch-grad-cam's show_cam_on_image does:
 *   heat = lut[uint8(255*cam)] / 255;  v = alpha*heat + (1-alpha)*img/255;
 *   out = uint8(255 * v / max(v))
 * The output is img downscaled (PIL bilinear) so that its long side is at
 * most max_side (<= 0: 800); cam01 (cam_h x cam_w, values in [0,1]) is
 * bilinearly upsampled (half-pixel centers, like cv2.resize) over box
 * (x0,y0,x1,y1 in img pixels, e.g. from cs_img_preproc_crop_box; NULL: the
 * whole image); pixels outside the box keep the plain image. */
cs_status cs_img_overlay(const cs_image *img, const float *cam01, int cam_h, int cam_w,
                         const float *box, cs_img_colormap cmap, float alpha, int max_side,
                         cs_image *out, cs_error *err);
/* cs_img_overlay with the blending split over par's threads (NULL: none). */
cs_status cs_img_overlay_par(const cs_image *img, const float *cam01, int cam_h, int cam_w,
                             const float *box, cs_img_colormap cmap, float alpha, int max_side,
                             const cs_img_par *par, cs_image *out, cs_error *err);
/* The overlay's display size of a w x h image (long side at most max_side,
 * <= 0: 800; rounded like PIL's thumbnail).  Returns 1 when that is smaller,
 * i.e. when cs_img_overlay resizes (bilinear) to *dw x *dh; a caller that
 * does so itself, scaling its box alike, gets the same overlay. */
int cs_img_display_size(int w, int h, int max_side, int *dw, int *dh);

/* The CAM alone at out_w x out_h: 1-channel 8-bit for CS_IMG_CMAP_GRAY,
 * colormapped RGB otherwise. */
cs_status cs_img_heatmap(const float *cam01, int cam_h, int cam_w, int out_w, int out_h,
                         cs_img_colormap cmap, cs_image *out, cs_error *err);

/* ---- encoding ------------------------------------------------------------ */

/* PNG (zlib level 1, SUB filter: fast), JPEG or WebP (quality 1..100, <= 0:
 * 90).  *out is malloc()ed, owned by the caller (free()). */
cs_status cs_img_encode(const cs_image *img, cs_img_format fmt, int quality, uint8_t **out,
                        size_t *len, cs_error *err);
/* PNG as cs_img_encode writes it, the rows split over par's threads
 * (NULL: none): each of N parts is filtered and deflated on its own, the
 * first N - 1 by zlib ending in a sync flush (byte-aligned, not final), the
 * last and largest by libdeflate, which is 2-3x as fast per byte
 * (bench/png_split.c); the zlib stream's Adler-32 is combined from the
 * parts'.  One part is exactly cs_img_encode's PNG. */
cs_status cs_img_encode_png(const cs_image *img, const cs_img_par *par, uint8_t **out,
                            size_t *len, cs_error *err);

#ifdef __cplusplus
}
#endif
#endif
