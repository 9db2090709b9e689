/* Private helpers shared by the imageio sources (not part of the API). */
#ifndef CS_IMAGEIO_INTERNAL_H
#define CS_IMAGEIO_INTERNAL_H

#include "camserve/imageio.h"

/* PIL-compatible resample of the output window [x0,x1) x [y0,y1) of an
 * rw x rh resize of src, where box (x0,y0,x1,y1 in src pixels, float as in
 * PIL) is the source region mapped onto the whole output.  dst receives
 * (y1-y0) rows of (x1-x0)*channels bytes at dst_stride. */
cs_status cs_img_resample_window(const uint8_t *src, int sw, int sh, int channels,
                                 const float box[4], int rw, int rh, int x0, int x1, int y0,
                                 int y1, cs_img_interp interp, uint8_t *dst, size_t dst_stride,
                                 cs_error *err);

/* How many ways to split units of work for par: par's ways (1 without
 * par), at most CS_IMG_PAR_MAX, and no more than leaves each part
 * unit_min units (0: no minimum); at least 1. */
int cs_img_par_ways(const cs_img_par *par, size_t units, size_t unit_min);
/* fn(arg, i) for i in [0, n): through par when it has threads to lend and
 * n > 1, else in order on this thread. */
void cs_img_par_run(const cs_img_par *par, int n, void (*fn)(void *arg, int i), void *arg);

#endif
