/* camserve GPU image path: a large JPEG decoded by nvJPEG and preprocessed
 * on the GPU, for a model that runs there (issue 8's end-to-end bar).
 *
 * On the CPU a 4000x3000 photo costs a sequential Huffman decode even at
 * 1/4 DCT scale, then the resize; here nvJPEG decodes the full frame on the
 * GPU (its hardware decoder where the GPU has one -- A100, H100, H200 --
 * else its GPU Huffman decoder), and the resize to the model's input and to
 * the overlay's display size run as kernels on the full-resolution frame.
 * Only the tensor (3 x crop floats) and the display image come back.
 *
 * What comes out is what the CPU path (imageio.h) would give for the same
 * decoded frame: the resize is PIL's, byte for byte, from a cs_img_taps
 * plan, and EXIF orientation is applied as the frame is read.  The frame
 * itself is nvJPEG's, whose colour conversion and chroma upsampling differ
 * from libjpeg-turbo's by a few levels, and it is the full-resolution frame
 * rather than the CPU's DCT-scaled one -- closer to what torchvision sees
 * from PIL (docs/gpu.md has the measured differences).
 *
 * nvJPEG is loaded at run time (dlopen: libnvjpeg.so.13, .so.12, or the
 * file CS_NVJPEG_LIB names), so the binary runs where it is absent; then
 * cs_gpuprep_open fails and callers keep the CPU path.
 *
 * A cs_gpuprep belongs to one thread at a time (it holds a CUDA stream,
 * nvJPEG decode state and growing device buffers); open one per thread.
 * Without CUDA (cs_cuda_built() == 0) every function exists and fails with
 * CS_EUNSUPPORTED. */
#ifndef CAMSERVE_GPUPREP_H
#define CAMSERVE_GPUPREP_H

#include "camserve/common.h"
#include "camserve/imageio.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cs_gpuprep cs_gpuprep;

/* Opens the GPU image path on CUDA device `device`: loads nvJPEG (once per
 * process), creates a stream and the decoders.  CS_EUNSUPPORTED without
 * CUDA or nvJPEG, CS_EBACKEND when the device or nvJPEG refuses. */
cs_status cs_gpuprep_open(int device, cs_gpuprep **out, cs_error *err);
void cs_gpuprep_close(cs_gpuprep *g); /* NULL is fine */

typedef struct cs_gpuprep_out {
    float *tensor;     /* in: 3 x crop_h x crop_w floats, written as cs_img_preprocess does */
    int want_display;  /* in: also make the overlay's display image */
    int display_max_side; /* in: its long side (<= 0: 800), as cs_img_display_size */
    cs_image display;  /* out (want_display): the picture at display size, RGB,
                        * orig_width/height the full frame's (after orientation);
                        * owned by the caller (cs_img_free) */
    float box[4];      /* out: the crop window in display pixels (in frame pixels
                        * without want_display), as cs_img_preproc_crop_box */
    int frame_w, frame_h; /* out: the full frame's size after orientation */
    const char *decoder; /* out: "hardware" or "gpu_hybrid" (static string) */
} cs_gpuprep_out;

/* Decodes and preprocesses one JPEG.  CS_EUNSUPPORTED means "not this one,
 * use the CPU path": not a JPEG, no end-of-image marker at the end (a cut
 * upload, which the CPU decoder reports properly), CMYK, beyond lim, an
 * encoding nvJPEG refuses, a preprocessing this path does not cover.
 * CS_ENOMEM: host, device or pinned memory ran out for this image (the
 * next may fit).  CS_EBACKEND: the GPU failed otherwise; stop using this
 * cs_gpuprep.  Outputs are written only on success. */
cs_status cs_gpuprep_run(cs_gpuprep *g, const void *jpeg, size_t len, const cs_img_limits *lim,
                         const cs_preproc *p, cs_gpuprep_out *out, cs_error *err);

#ifdef __cplusplus
}
#endif
#endif
