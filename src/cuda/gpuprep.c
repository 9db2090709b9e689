/* include/camserve/gpuprep.h: nvJPEG decode + PIL-exact resize on the GPU.
 *
 * nvJPEG is not linked: it ships with the CUDA toolkit on GPU machines but
 * not on every build machine (this project's has no nvjpeg.h), and a
 * server without it must still start.  So the few types and entry points
 * used here are declared below from NVIDIA's nvJPEG documentation (the C
 * ABI: opaque handles, int enums, a struct of 4 pointers + 4 pitches) and
 * resolved with dlsym.
 *
 * Decoders, in order: the hardware JPEG decoder (nvjpegCreateEx with
 * NVJPEG_BACKEND_HARDWARE; A100/H100/H200; baseline only, through the
 * batched API with a batch of one), then the GPU-Huffman decoder of the
 * decoupled API (NVJPEG_BACKEND_GPU_HYBRID: host parse, transfer, device
 * decode).  The plain nvjpegDecode is not used: its default backend decodes
 * Huffman on the CPU, which is the sequential part the CPU path already
 * pays.  CS_NVJPEG_BACKEND=hardware|gpu_hybrid forces one (benchmarks).
 *
 * Memory: every buffer grows to the largest image seen and is kept (a
 * 50 MP frame is 150 MB of device memory per open cs_gpuprep) -- device
 * memory is plentiful next to that and reallocating per photo would cost
 * more than the decode.  Staging in pinned host memory, likewise kept. */
#include "camserve/gpuprep.h"

#include "cuda/gpuprep_internal.h"
#include "cuda/gpuprep_math.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- nvJPEG, declared from its documentation -------------------------------------- */

typedef int nvj_status;                      /* nvjpegStatus_t: 0 = success */
typedef struct nvj_opaque *nvj_handle;       /* nvjpegHandle_t */
typedef struct nvj_opaque *nvj_state;        /* nvjpegJpegState_t */
typedef struct nvj_opaque *nvj_decoder;      /* nvjpegJpegDecoder_t */
typedef struct nvj_opaque *nvj_stream;       /* nvjpegJpegStream_t */
typedef struct nvj_opaque *nvj_params;       /* nvjpegDecodeParams_t */
typedef struct nvj_opaque *nvj_pinned;       /* nvjpegBufferPinned_t */
typedef struct nvj_opaque *nvj_devbuf;       /* nvjpegBufferDevice_t */
typedef struct nvj_image {                   /* nvjpegImage_t */
    unsigned char *channel[4];
    size_t pitch[4];
} nvj_image;
enum {
    NVJ_BACKEND_DEFAULT = 0,
    NVJ_BACKEND_GPU_HYBRID = 2,
    NVJ_BACKEND_HARDWARE = 3,
    NVJ_OUTPUT_RGBI = 5, /* interleaved RGB in channel[0] */
};

typedef struct nvj_api {
    nvj_status (*CreateEx)(int backend, void *dev_alloc, void *pinned_alloc, unsigned flags, nvj_handle *h);
    nvj_status (*Destroy)(nvj_handle h);
    nvj_status (*JpegStateCreate)(nvj_handle h, nvj_state *s);
    nvj_status (*JpegStateDestroy)(nvj_state s);
    nvj_status (*DecoderCreate)(nvj_handle h, int backend, nvj_decoder *d);
    nvj_status (*DecoderDestroy)(nvj_decoder d);
    nvj_status (*DecoderStateCreate)(nvj_handle h, nvj_decoder d, nvj_state *s);
    nvj_status (*BufferPinnedCreate)(nvj_handle h, void *alloc, nvj_pinned *b);
    nvj_status (*BufferPinnedDestroy)(nvj_pinned b);
    nvj_status (*BufferDeviceCreate)(nvj_handle h, void *alloc, nvj_devbuf *b);
    nvj_status (*BufferDeviceDestroy)(nvj_devbuf b);
    nvj_status (*StateAttachPinnedBuffer)(nvj_state s, nvj_pinned b);
    nvj_status (*StateAttachDeviceBuffer)(nvj_state s, nvj_devbuf b);
    nvj_status (*JpegStreamCreate)(nvj_handle h, nvj_stream *js);
    nvj_status (*JpegStreamDestroy)(nvj_stream js);
    nvj_status (*JpegStreamParse)(nvj_handle h, const unsigned char *data, size_t len, int save_metadata,
                                  int save_stream, nvj_stream js);
    nvj_status (*JpegStreamParseHeader)(nvj_handle h, const unsigned char *data, size_t len, nvj_stream js);
    nvj_status (*JpegStreamGetFrameDimensions)(nvj_stream js, unsigned *w, unsigned *h);
    nvj_status (*JpegStreamGetComponentsNum)(nvj_stream js, unsigned *n);
    nvj_status (*DecodeParamsCreate)(nvj_handle h, nvj_params *p);
    nvj_status (*DecodeParamsDestroy)(nvj_params p);
    nvj_status (*DecodeParamsSetOutputFormat)(nvj_params p, int fmt);
    nvj_status (*DecoderJpegSupported)(nvj_decoder d, nvj_stream js, nvj_params p, int *is_supported);
    nvj_status (*DecodeJpegHost)(nvj_handle h, nvj_decoder d, nvj_state s, nvj_params p, nvj_stream js);
    nvj_status (*DecodeJpegTransferToDevice)(nvj_handle h, nvj_decoder d, nvj_state s, nvj_stream js,
                                             cudaStream_t st);
    nvj_status (*DecodeJpegDevice)(nvj_handle h, nvj_decoder d, nvj_state s, nvj_image *dst, cudaStream_t st);
    nvj_status (*DecodeBatchedInitialize)(nvj_handle h, nvj_state s, int batch, int max_cpu_threads, int fmt);
    nvj_status (*DecodeBatchedSupported)(nvj_handle h, nvj_stream js, int *is_supported);
    nvj_status (*DecodeBatched)(nvj_handle h, nvj_state s, const unsigned char *const *data,
                                const size_t *lengths, nvj_image *dst, cudaStream_t st);
} nvj_api;

static nvj_api g_nvj;
static pthread_once_t g_nvj_once = PTHREAD_ONCE_INIT;
static char g_nvj_err[256]; /* empty when loaded */

static void nvj_load(void) {
    const char *env = getenv("CS_NVJPEG_LIB");
    const char *names[] = {env && *env ? env : NULL, "libnvjpeg.so.13", "libnvjpeg.so.12", "libnvjpeg.so"};
    void *lib = NULL;
    for (size_t i = 0; i < sizeof names / sizeof *names && !lib; i++)
        if (names[i]) lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *e = dlerror();
        snprintf(g_nvj_err, sizeof g_nvj_err, "nvJPEG not found (%s)", e ? e : "no libnvjpeg.so");
        return;
    }
    /* A table of (field, symbol): the fields are function pointers of
     * different types, set through their storage (POSIX guarantees that a
     * void * from dlsym converts to a function pointer). */
    struct {
        void *field;
        const char *sym;
    } tab[] = {
#define NVJ(f) {(void *)&g_nvj.f, "nvjpeg" #f}
        NVJ(CreateEx), NVJ(Destroy), NVJ(JpegStateCreate), NVJ(JpegStateDestroy), NVJ(DecoderCreate),
        NVJ(DecoderDestroy), NVJ(DecoderStateCreate), NVJ(BufferPinnedCreate), NVJ(BufferPinnedDestroy),
        NVJ(BufferDeviceCreate), NVJ(BufferDeviceDestroy), NVJ(StateAttachPinnedBuffer),
        NVJ(StateAttachDeviceBuffer), NVJ(JpegStreamCreate), NVJ(JpegStreamDestroy), NVJ(JpegStreamParse),
        NVJ(JpegStreamParseHeader), NVJ(JpegStreamGetFrameDimensions), NVJ(JpegStreamGetComponentsNum),
        NVJ(DecodeParamsCreate), NVJ(DecodeParamsDestroy), NVJ(DecodeParamsSetOutputFormat),
        NVJ(DecoderJpegSupported), NVJ(DecodeJpegHost), NVJ(DecodeJpegTransferToDevice), NVJ(DecodeJpegDevice),
        NVJ(DecodeBatchedInitialize), NVJ(DecodeBatchedSupported), NVJ(DecodeBatched),
#undef NVJ
    };
    for (size_t i = 0; i < sizeof tab / sizeof *tab; i++) {
        void *f = dlsym(lib, tab[i].sym);
        if (!f) {
            snprintf(g_nvj_err, sizeof g_nvj_err, "nvJPEG lacks %s", tab[i].sym);
            memset(&g_nvj, 0, sizeof g_nvj);
            dlclose(lib);
            return;
        }
        memcpy(tab[i].field, &f, sizeof f);
    }
    /* the library stays loaded for the process: handles may outlive any one user */
}

/* ---- the context ----------------------------------------------------------------- */

struct cs_gpuprep {
    int device;
    cudaStream_t stream;
    /* GPU-Huffman decoder (decoupled API) */
    nvj_handle h;
    nvj_decoder dec;
    nvj_state dstate;
    nvj_pinned pinned;
    nvj_devbuf devbuf;
    nvj_stream js;
    nvj_params params;
    /* hardware decoder (batched API), or hw == NULL */
    nvj_handle hw;
    nvj_state hw_state;
    nvj_stream hw_js;
    int force; /* 0: hardware then GPU-Huffman; 1: hardware only; 2: GPU-Huffman only */
    /* device buffers, grown and kept */
    uint8_t *frame, *tmp, *pix;
    size_t frame_cap, tmp_cap, pix_cap;
    void *plan; /* int32 plans + float LUT */
    size_t plan_cap;
    float *tensor;
    size_t tensor_cap;
    /* pinned staging: plans in, tensor + display out */
    uint8_t *host;
    size_t host_cap;
    /* CS_GPUPREP_PROFILE=1: events around decode, resize and download, and
     * one line on stderr per image (where the end-to-end time goes) */
    cudaEvent_t prof[4];
    int profile;
};

static cs_status nvj_fail(cs_error *err, const char *what, nvj_status s) {
    return cs_errorf(err, CS_EBACKEND, "nvJPEG %s failed (status %d)", what, s);
}

/* A CUDA failure: out of device or pinned memory is this image's problem
 * (CS_ENOMEM: the caller decodes it on the CPU and keeps the path); any
 * other error is the GPU's (CS_EBACKEND). */
static cs_status cu_fail(cs_error *err, const char *what, cudaError_t e) {
    (void)cudaGetLastError(); /* not sticky: clear it for later calls */
    return cs_errorf(err, e == cudaErrorMemoryAllocation ? CS_ENOMEM : CS_EBACKEND, "%s: %s", what,
                     cudaGetErrorString(e));
}

void cs_gpuprep_close(cs_gpuprep *g) {
    if (!g) return;
    if (g->device >= 0) (void)cudaSetDevice(g->device);
    if (g->stream) (void)cudaStreamSynchronize(g->stream);
    if (g->js) g_nvj.JpegStreamDestroy(g->js);
    if (g->params) g_nvj.DecodeParamsDestroy(g->params);
    if (g->dstate) g_nvj.JpegStateDestroy(g->dstate);
    if (g->pinned) g_nvj.BufferPinnedDestroy(g->pinned);
    if (g->devbuf) g_nvj.BufferDeviceDestroy(g->devbuf);
    if (g->dec) g_nvj.DecoderDestroy(g->dec);
    if (g->h) g_nvj.Destroy(g->h);
    if (g->hw_js) g_nvj.JpegStreamDestroy(g->hw_js);
    if (g->hw_state) g_nvj.JpegStateDestroy(g->hw_state);
    if (g->hw) g_nvj.Destroy(g->hw);
    cudaFree(g->frame);
    cudaFree(g->tmp);
    cudaFree(g->pix);
    cudaFree(g->plan);
    cudaFree(g->tensor);
    cudaFreeHost(g->host);
    for (int i = 0; i < 4; i++)
        if (g->prof[i]) cudaEventDestroy(g->prof[i]);
    if (g->stream) cudaStreamDestroy(g->stream);
    free(g);
}

/* The hardware decoder, where the GPU has one; failing is normal (no
 * engine: NVJPEG_STATUS_ARCH_MISMATCH) and leaves g->hw NULL. */
static void open_hardware(cs_gpuprep *g) {
    if (g_nvj.CreateEx(NVJ_BACKEND_HARDWARE, NULL, NULL, 0, &g->hw) != 0) {
        g->hw = NULL;
        return;
    }
    if (g_nvj.JpegStateCreate(g->hw, &g->hw_state) != 0 || g_nvj.JpegStreamCreate(g->hw, &g->hw_js) != 0 ||
        g_nvj.DecodeBatchedInitialize(g->hw, g->hw_state, 1, 1, NVJ_OUTPUT_RGBI) != 0) {
        if (g->hw_js) g_nvj.JpegStreamDestroy(g->hw_js);
        if (g->hw_state) g_nvj.JpegStateDestroy(g->hw_state);
        g_nvj.Destroy(g->hw);
        g->hw = NULL;
        g->hw_state = NULL;
        g->hw_js = NULL;
    }
}

cs_status cs_gpuprep_open(int device, cs_gpuprep **out, cs_error *err) {
    pthread_once(&g_nvj_once, nvj_load);
    if (g_nvj_err[0]) return cs_errorf(err, CS_EUNSUPPORTED, "%s", g_nvj_err);
    cs_gpuprep *g = calloc(1, sizeof *g);
    if (!g) return cs_errorf(err, CS_ENOMEM, "out of memory");
    g->device = -1;
    const char *force = getenv("CS_NVJPEG_BACKEND");
    g->force = !force ? 0 : !strcmp(force, "hardware") ? 1 : !strcmp(force, "gpu_hybrid") ? 2 : 0;
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        cs_status st = cu_fail(err, "cudaSetDevice", e);
        free(g);
        return st;
    }
    g->device = device;
    if ((e = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        cs_status st = cu_fail(err, "cudaStreamCreate", e);
        cs_gpuprep_close(g);
        return st;
    }
    nvj_status s;
    const char *what = "create";
    if ((s = g_nvj.CreateEx(NVJ_BACKEND_DEFAULT, NULL, NULL, 0, &g->h)) == 0 &&
        (what = "decoder create", s = g_nvj.DecoderCreate(g->h, NVJ_BACKEND_GPU_HYBRID, &g->dec)) == 0 &&
        (what = "decoder state", s = g_nvj.DecoderStateCreate(g->h, g->dec, &g->dstate)) == 0 &&
        (what = "pinned buffer", s = g_nvj.BufferPinnedCreate(g->h, NULL, &g->pinned)) == 0 &&
        (what = "device buffer", s = g_nvj.BufferDeviceCreate(g->h, NULL, &g->devbuf)) == 0 &&
        (what = "attach", s = g_nvj.StateAttachPinnedBuffer(g->dstate, g->pinned)) == 0 &&
        (s = g_nvj.StateAttachDeviceBuffer(g->dstate, g->devbuf)) == 0 &&
        (what = "stream create", s = g_nvj.JpegStreamCreate(g->h, &g->js)) == 0 &&
        (what = "params", s = g_nvj.DecodeParamsCreate(g->h, &g->params)) == 0)
        s = g_nvj.DecodeParamsSetOutputFormat(g->params, NVJ_OUTPUT_RGBI);
    if (s != 0) {
        cs_status st = nvj_fail(err, what, s);
        cs_gpuprep_close(g);
        return st;
    }
    if (g->force != 2) open_hardware(g);
    const char *prof = getenv("CS_GPUPREP_PROFILE");
    if (prof && *prof && strcmp(prof, "0")) {
        g->profile = 1;
        for (int i = 0; i < 4 && g->profile; i++)
            if (cudaEventCreate(&g->prof[i]) != cudaSuccess) g->profile = 0;
    }
    *out = g;
    return CS_OK;
}

/* Grows a device buffer to at least n bytes (contents not kept). */
static cudaError_t grow(void **p, size_t *cap, size_t n) {
    if (*cap >= n) return cudaSuccess;
    cudaFree(*p);
    *p = NULL;
    *cap = 0;
    cudaError_t e = cudaMalloc(p, n);
    if (e == cudaSuccess) *cap = n;
    return e;
}

static cudaError_t grow_host(cs_gpuprep *g, size_t n) {
    if (g->host_cap >= n) return cudaSuccess;
    cudaFreeHost(g->host);
    g->host = NULL;
    g->host_cap = 0;
    cudaError_t e = cudaHostAlloc((void **)&g->host, n, cudaHostAllocDefault);
    if (e == cudaSuccess) g->host_cap = n;
    return e;
}

/* Ends with the end-of-image marker: a cut upload goes to the CPU decoder,
 * which reports it (nvJPEG's handling of truncated data is not ours to
 * promise). */
static int ends_with_eoi(const uint8_t *p, size_t len) {
    return len >= 4 && p[len - 2] == 0xFF && p[len - 1] == 0xD9;
}

/* Whether this call tries the hardware decoder first; its stream (hw_js)
 * is then the one parsed for the header, else js. */
static int hardware_first(const cs_gpuprep *g) { return g->hw && g->force != 2; }

/* Decodes into g->frame (W * 3 bytes a row), queued on g->stream; names
 * the decoder that took it in *used.  CS_EUNSUPPORTED when none does.  The
 * caller parsed the stream hardware_first() names: the header alone for
 * the hardware decoder, the whole stream for the GPU-Huffman one. */
static cs_status decode(cs_gpuprep *g, const uint8_t *data, size_t len, int W, int H,
                        const char **used, cs_error *err) {
    cudaError_t e = grow((void **)&g->frame, &g->frame_cap, (size_t)W * H * 3);
    if (e != cudaSuccess) return cu_fail(err, "device memory for the frame", e);
    nvj_image img = {{g->frame, NULL, NULL, NULL}, {(size_t)W * 3, 0, 0, 0}};
    if (hardware_first(g)) {
        int unsupported = 1;
        if (g_nvj.DecodeBatchedSupported(g->hw, g->hw_js, &unsupported) == 0 && unsupported == 0) {
            nvj_status s = g_nvj.DecodeBatched(g->hw, g->hw_state, &data, &len, &img, g->stream);
            if (s == 0) {
                *used = "hardware";
                return CS_OK;
            }
            /* the batched decoder must be initialised again after a failure */
            (void)g_nvj.DecodeBatchedInitialize(g->hw, g->hw_state, 1, 1, NVJ_OUTPUT_RGBI);
        }
    }
    if (g->force == 1)
        return cs_errorf(err, CS_EUNSUPPORTED, g->hw ? "the hardware decoder does not take this JPEG"
                                                   : "this GPU has no hardware JPEG decoder");
    if (hardware_first(g) && g_nvj.JpegStreamParse(g->h, data, len, 0, 0, g->js) != 0)
        return cs_errorf(err, CS_EUNSUPPORTED, "nvJPEG cannot parse this JPEG");
    int unsupported = 1;
    nvj_status s = g_nvj.DecoderJpegSupported(g->dec, g->js, g->params, &unsupported);
    if (s != 0 || unsupported != 0)
        return cs_errorf(err, CS_EUNSUPPORTED, "nvJPEG's GPU decoder does not take this JPEG");
    const char *what = "host phase";
    if ((s = g_nvj.DecodeJpegHost(g->h, g->dec, g->dstate, g->params, g->js)) == 0 &&
        (what = "transfer", s = g_nvj.DecodeJpegTransferToDevice(g->h, g->dec, g->dstate, g->js, g->stream)) == 0 &&
        (what = "device phase", s = g_nvj.DecodeJpegDevice(g->h, g->dec, g->dstate, &img, g->stream)) == 0) {
        *used = "gpu_hybrid";
        return CS_OK;
    }
    /* a stream nvJPEG parsed but cannot decode: the CPU decoder decides */
    return cs_errorf(err, CS_EUNSUPPORTED, "nvJPEG decode (%s) failed (status %d)", what, s);
}

/* What one resample needs on the device: its plan's arrays, at offsets
 * into g->plan. */
typedef struct dplan {
    cs_img_taps t;
    size_t off; /* int32 index of hfirst in g->plan */
} dplan;

static size_t plan_ints(const cs_img_taps *t) {
    return (size_t)t->ow * (1 + (size_t)t->hk) + (size_t)t->oh * (2 + (size_t)t->vk);
}

/* Bytes of the horizontal pass's output (run_plan's g->tmp). */
static size_t tmp_bytes(const cs_img_taps *t) {
    return (size_t)t->ow * 3 * (size_t)(t->yhi > t->ylo ? t->yhi - t->ylo : 1);
}

/* One resample on the device: frame -> dst (stride bytes a row), through
 * g->tmp, which the caller sized (tmp_bytes) before anything was queued:
 * freeing a buffer that queued work still reads is not an option. */
static cs_status run_plan(cs_gpuprep *g, const dplan *p, int W, int H, int o, uint8_t *dst,
                          size_t stride, cs_error *err) {
    const cs_img_taps *t = &p->t;
    const int32_t *base = (const int32_t *)g->plan + p->off;
    const int32_t *hfirst = base, *hw = hfirst + t->ow, *vfirst = hw + (size_t)t->ow * t->hk,
                  *vn = vfirst + t->oh, *vw = vn + t->oh;
    const int rows = t->yhi - t->ylo;
    cs_cuda_stream s = (cs_cuda_stream)g->stream;
    int r = cs_gpuprep_k_hpass(s, g->frame, (size_t)W * 3, W, H, o, t->ylo, rows, t->ow, hfirst, hw, t->hk, g->tmp);
    if (!r) r = cs_gpuprep_k_vpass(s, g->tmp, t->ow, t->ylo, t->oh, vfirst, vn, vw, t->vk, dst, stride);
    return r ? cu_fail(err, "resize kernels", (cudaError_t)r) : CS_OK;
}

/* CS_GPUPREP_PROFILE: event i on the stream (decode, resize, download
 * boundaries); nothing when not profiling */
static cudaError_t prof_mark(cs_gpuprep *g, int i) {
    return g->profile ? cudaEventRecord(g->prof[i], g->stream) : cudaSuccess;
}

cs_status cs_gpuprep_run(cs_gpuprep *g, const void *jpeg, size_t len, const cs_img_limits *lim,
                         const cs_preproc *p, cs_gpuprep_out *out, cs_error *err) {
    const uint8_t *data = jpeg;
    cs_img_limits dl = cs_img_limits_default();
    if (!lim) lim = &dl;
    if (!g || !data || !p || !out || !out->tensor) return cs_errorf(err, CS_EINVAL, "gpuprep: bad arguments");
    cs_status st = cs_img_preproc_validate(p, err);
    if (st != CS_OK) return st;
    if (cs_img_sniff(data, len) != CS_IMG_FORMAT_JPEG || len > lim->max_bytes || !ends_with_eoi(data, len))
        return cs_errorf(err, CS_EUNSUPPORTED, "not a whole JPEG within the limits");
    cudaError_t e = cudaSetDevice(g->device);
    if (e != cudaSuccess) return cu_fail(err, "cudaSetDevice", e);
    double hp[5] = {cs_now_ms()}; /* profile: start, parsed, planned, decode queued, done */

    /* the frame header, from nvJPEG's parse with the handle of the decoder
     * tried first (decode() parses for the other one only if it gets
     * there).  The hardware decoder takes the bytes, not the parsed stream,
     * and its support check needs only the header: parsing the whole
     * stream walks every entropy-coded byte on the host first, 1.1-1.6 ms
     * of a 4000x3000 photo's 9.6-10, against 0.4-0.6 for the header
     * (CS_GPUPREP_PROFILE; bench/results/gpu-prep-h200-before.txt and
     * gpu-prep-h200.txt). */
    unsigned W = 0, H = 0, nc = 0;
    nvj_stream js = hardware_first(g) ? g->hw_js : g->js;
    if ((hardware_first(g) ? g_nvj.JpegStreamParseHeader(g->hw, data, len, js)
                           : g_nvj.JpegStreamParse(g->h, data, len, 0, 0, js)) != 0 ||
        g_nvj.JpegStreamGetFrameDimensions(js, &W, &H) != 0 || g_nvj.JpegStreamGetComponentsNum(js, &nc) != 0)
        return cs_errorf(err, CS_EUNSUPPORTED, "nvJPEG cannot parse this JPEG");
    if ((nc != 1 && nc != 3) || W < 1 || H < 1 || W > 65535 || H > 65535 ||
        (int64_t)W * H > lim->max_pixels)
        return cs_errorf(err, CS_EUNSUPPORTED, "a JPEG this path does not take (%u components, %ux%u)", nc, W, H);
    hp[1] = cs_now_ms();
    const int o = cs_img_jpeg_orientation(data, len);
    int w, h; /* displayed */
    cs_gp_oriented_size(o, (int)W, (int)H, &w, &h);

    /* geometry, as cs_img_preprocess_u8 and the service's display resize
     * compute it for a full-resolution decode */
    int rw, rh, cx, cy;
    cs_img_preproc_geometry(p, w, h, &rw, &rh, &cx, &cy);
    if (rw <= 0 || rh <= 0) return cs_errorf(err, CS_EUNSUPPORTED, "resizes to nothing");
    const int cw = p->crop_w, ch = p->crop_h;
    const int x0 = cx < 0 ? 0 : cx, y0 = cy < 0 ? 0 : cy;
    const int x1 = cx + cw > rw ? rw : cx + cw, y1 = cy + ch > rh ? rh : cy + ch;
    int dw = w, dh = h;
    if (out->want_display && !cs_img_display_size(w, h, out->display_max_side, &dw, &dh))
        return cs_errorf(err, CS_EUNSUPPORTED, "no display resize"); /* small: the CPU's job */
    const float box[4] = {0.0f, 0.0f, (float)w, (float)h};
    dplan crop = {{0}, 0}, disp = {{0}, 0};
    uint8_t *pix_host = NULL;
    if (x1 > x0 && y1 > y0)
        st = cs_img_resample_taps(w, h, box, rw, rh, x0, x1, y0, y1, p->interp, &crop.t, err);
    if (st == CS_OK && out->want_display)
        st = cs_img_resample_taps(w, h, box, dw, dh, 0, dw, 0, dh, CS_IMG_INTERP_BILINEAR, &disp.t, err);
    if (st != CS_OK) goto done;

    /* plans and the LUT in one upload */
    const size_t crop_ints = crop.t.ow ? plan_ints(&crop.t) : 0, disp_ints = disp.t.ow ? plan_ints(&disp.t) : 0;
    disp.off = crop_ints;
    const size_t lut_off = (crop_ints + disp_ints) * sizeof(int32_t);
    const size_t plan_bytes = lut_off + sizeof(float) * 3 * 256;
    const size_t npix = (size_t)cw * ch, tensor_bytes = sizeof(float) * 3 * npix;
    const size_t disp_bytes = out->want_display ? (size_t)dw * dh * 3 : 0;
    const size_t host_bytes = plan_bytes > tensor_bytes + disp_bytes ? plan_bytes : tensor_bytes + disp_bytes;
    if ((e = grow_host(g, host_bytes)) != cudaSuccess ||
        (e = grow(&g->plan, &g->plan_cap, plan_bytes)) != cudaSuccess ||
        (e = grow((void **)&g->pix, &g->pix_cap, npix * 3 + disp_bytes)) != cudaSuccess ||
        (e = grow((void **)&g->tensor, &g->tensor_cap, tensor_bytes)) != cudaSuccess ||
        (e = grow((void **)&g->tmp, &g->tmp_cap,
                  tmp_bytes(&crop.t) > tmp_bytes(&disp.t) ? tmp_bytes(&crop.t) : tmp_bytes(&disp.t))) != cudaSuccess) {
        st = cu_fail(err, "GPU image buffers", e);
        goto done;
    }
    const dplan *plans[2] = {&crop, &disp};
    for (int k = 0; k < 2; k++) {
        const cs_img_taps *t = &plans[k]->t;
        if (!t->ow) continue;
        int32_t *d = (int32_t *)g->host + plans[k]->off;
        memcpy(d, t->hfirst, sizeof(int32_t) * t->ow);
        memcpy(d + t->ow, t->hw, sizeof(int32_t) * t->ow * t->hk);
        d += (size_t)t->ow * (1 + t->hk);
        memcpy(d, t->vfirst, sizeof(int32_t) * t->oh);
        memcpy(d + t->oh, t->vn, sizeof(int32_t) * t->oh);
        memcpy(d + 2 * t->oh, t->vw, sizeof(int32_t) * t->oh * t->vk);
    }
    float lut[3][256];
    cs_img_preproc_lut(p, lut);
    memcpy(g->host + lut_off, lut, sizeof lut);
    if ((e = cudaMemcpyAsync(g->plan, g->host, plan_bytes, cudaMemcpyHostToDevice, g->stream)) != cudaSuccess) {
        st = cu_fail(err, "plan upload", e);
        goto done;
    }

    const char *used = NULL;
    hp[2] = cs_now_ms();
    (void)prof_mark(g, 0);
    if ((st = decode(g, data, len, (int)W, (int)H, &used, err)) != CS_OK) goto done;
    hp[3] = cs_now_ms();
    (void)prof_mark(g, 1);

    /* the crop (zeros where it exceeds the resized image: torchvision's
     * padding), the tensor, the display image */
    uint8_t *cropu8 = g->pix, *dispu8 = g->pix + npix * 3;
    if ((e = cudaMemsetAsync(cropu8, 0, npix * 3, g->stream)) != cudaSuccess) {
        st = cu_fail(err, "crop clear", e);
        goto done;
    }
    if (crop.t.ow &&
        (st = run_plan(g, &crop, (int)W, (int)H, o, cropu8 + ((size_t)(y0 - cy) * cw + (size_t)(x0 - cx)) * 3,
                       (size_t)cw * 3, err)) != CS_OK)
        goto done;
    int r = cs_gpuprep_k_normalize((cs_cuda_stream)g->stream, cropu8, (int64_t)npix,
                                   (const float *)((const uint8_t *)g->plan + lut_off),
                                   p->order == CS_IMG_ORDER_BGR, g->tensor);
    if (r) {
        st = cu_fail(err, "normalize kernel", (cudaError_t)r);
        goto done;
    }
    if (out->want_display && (st = run_plan(g, &disp, (int)W, (int)H, o, dispu8, (size_t)dw * 3, err)) != CS_OK)
        goto done;
    (void)prof_mark(g, 2);
    /* the plan upload read g->host before this stream position: reusing it
     * for the downloads is ordered on the same stream */
    if ((e = cudaMemcpyAsync(g->host, g->tensor, tensor_bytes, cudaMemcpyDeviceToHost, g->stream)) != cudaSuccess ||
        (disp_bytes && (e = cudaMemcpyAsync(g->host + tensor_bytes, dispu8, disp_bytes, cudaMemcpyDeviceToHost,
                                            g->stream)) != cudaSuccess) ||
        (e = prof_mark(g, 3)) != cudaSuccess || (e = cudaStreamSynchronize(g->stream)) != cudaSuccess) {
        st = cu_fail(err, "GPU image download", e);
        goto done;
    }
    if (g->profile) {
        hp[4] = cs_now_ms();
        float dev[3] = {-1.f, -1.f, -1.f};
        for (int i = 0; i < 3; i++)
            if (cudaEventElapsedTime(&dev[i], g->prof[i], g->prof[i + 1]) != cudaSuccess) dev[i] = -1.f;
        fprintf(stderr,
                "gpuprep profile: %ux%u %s: host parse %.2f, plans %.2f, decode call %.2f, wait %.2f; "
                "device decode %.2f, resize %.2f, download %.2f; total %.2f ms\n",
                W, H, used, hp[1] - hp[0], hp[2] - hp[1], hp[3] - hp[2], hp[4] - hp[3], dev[0], dev[1], dev[2],
                hp[4] - hp[0]);
    }
    if (disp_bytes && !(pix_host = malloc(disp_bytes))) {
        st = cs_errorf(err, CS_ENOMEM, "out of memory for a %dx%d image", dw, dh);
        goto done;
    }
    memcpy(out->tensor, g->host, tensor_bytes);
    /* the crop window in frame pixels, then in display pixels as the
     * service's to_display_size scales it */
    cs_image frame = {.width = w, .height = h, .orig_width = w, .orig_height = h};
    cs_img_preproc_crop_box(p, &frame, out->box);
    if (disp_bytes) {
        memcpy(pix_host, g->host + tensor_bytes, disp_bytes);
        const double sx = (double)dw / w, sy = (double)dh / h;
        out->box[0] = (float)(out->box[0] * sx);
        out->box[1] = (float)(out->box[1] * sy);
        out->box[2] = (float)(out->box[2] * sx);
        out->box[3] = (float)(out->box[3] * sy);
        out->display = (cs_image){.width = dw, .height = dh, .channels = 3, .rgb = pix_host,
                                  .orig_width = w, .orig_height = h};
        pix_host = NULL;
    }
    out->frame_w = w;
    out->frame_h = h;
    out->decoder = used;
done:
    /* a failure may leave copies queued that read g->host: the next call
     * writes it */
    if (st != CS_OK) (void)cudaStreamSynchronize(g->stream);
    free(pix_host);
    cs_img_taps_free(&crop.t);
    cs_img_taps_free(&disp.t);
    return st;
}
