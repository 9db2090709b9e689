/* Private helpers shared by the imageio sources (not part of the API). */
#ifndef CS_IMAGEIO_INTERNAL_H
#define CS_IMAGEIO_INTERNAL_H

#include "camserve/imageio.h"

/* Reads a whole file into a malloc()ed buffer (caller frees); more than
 * max_bytes is CS_ELIMIT. */
cs_status cs_img_read_file(const char *path, size_t max_bytes, uint8_t **out, size_t *len,
                           cs_error *err);

/* PIL-compatible resample of the output window [x0,x1) x [y0,y1) of an
 * rw x rh resize of src, where box (x0,y0,x1,y1 in src pixels, float as in
 * PIL) is the source region mapped onto the whole output.  dst receives
 * (y1-y0) rows of (x1-x0)*channels bytes at dst_stride. */
cs_status cs_img_resample_window(const uint8_t *src, int sw, int sh, int channels,
                                 const float box[4], int rw, int rh, int x0, int x1, int y0,
                                 int y1, cs_img_interp interp, uint8_t *dst, size_t dst_stride,
                                 cs_error *err);

#endif
