/* Private to src/cam: the scratch allocator and the helpers the method files
 * share.  Scratch is one block carved front to back (a bump allocator), so a
 * lent buffer serves a whole call without any further allocation. */
#ifndef CAMSERVE_CAM_INTERNAL_H
#define CAMSERVE_CAM_INTERNAL_H

#include "camserve/cam.h"

#include <stddef.h>

#define CS_CAM_ALIGN 64

typedef struct cam_arena {
    char *base;
    size_t size, used;
    int owned; /* base came from malloc and is freed by cam_arena_release */
} cam_arena;

/* Rounds n up to the carving alignment; sizing and carving must agree. */
static inline size_t cam_round(size_t n) {
    return (n + (CS_CAM_ALIGN - 1)) & ~(size_t)(CS_CAM_ALIGN - 1);
}

/* Uses opt's scratch when it holds `need` bytes (cs_cam_scratch_bytes,
 * alignment slack included), else allocates. */
cs_status cam_arena_init(cam_arena *a, const cs_cam_options *opt, size_t need, cs_error *err);
void *cam_arena_take(cam_arena *a, size_t bytes);
void cam_arena_release(cam_arena *a);

/* Lanczos dimension per restart cycle of the eigensolver. */
#define CS_CAM_LANCZOS_K 64

/* Scratch bytes cam_project_2d needs for one c x hw image. */
size_t cam_project_bytes(int c, int hw);

/* get_2d_projection for one image: x is c x hw (channel-major) and is
 * centred in place; p (hw) receives the sign-fixed projection onto the first
 * principal component.  Scratch comes from a. */
void cam_project_2d(float *x, int c, int hw, float *p, cam_arena *a);

/* Bilinear sampling with align_corners=True (torch UpsamplingBilinear2d),
 * used by ScoreCAM to bring activations to the input size. */
void cam_resize_align_corners(const float *src, int sh, int sw, float *dst, int dh, int dw);

/* Channel-weighted CAM of one image (base_cam.get_cam_image): sum_c
 * wts[c] * act[c], or the projection of the weighted activations with
 * eigen_smooth; then max(., 0) into raw (hw). */
void cam_weighted(const float *act, const float *wts, int c, int hw, int eigen_smooth,
                  float *raw, cam_arena *a);

/* ScoreCAM / AblationCAM channel weights for image b (c floats). */
cs_status cam_scorecam_weights(const float *act, int b, int c, int h, int w,
                               const cs_cam_forward *fwd, int batch, float *wts, cam_arena *a,
                               cs_error *err);
cs_status cam_ablation_weights(const float *act, int b, int c, int h, int w,
                               const cs_cam_forward *fwd, int batch, float *wts, cam_arena *a,
                               cs_error *err);
size_t cam_scorecam_bytes(int c, const cs_cam_forward *fwd, int batch);
size_t cam_ablation_bytes(int c, int hw, int batch);

#endif
