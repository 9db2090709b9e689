/* A stand-in for libnvjpeg for tests/unit/test_cuda_emul.c, loaded by
 * src/cuda/gpuprep.c through CS_NVJPEG_LIB exactly as the real library is
 * (dlopen + dlsym), so the loader, the decoder choice and the calls'
 * order and arguments run without a GPU.
 *
 * It implements the entry points gpuprep.c uses from their documented
 * behaviour, with the emulation's rule that device memory is host memory:
 * a decode writes interleaved RGB (NVJPEG_OUTPUT_RGBI) into
 * destination->channel[0] at pitch[0], decoded by libjpeg-turbo with the
 * CPU path's settings, so the GPU path's output can be compared with the
 * CPU path's byte for byte.  The hardware backend exists only when
 * CS_FAKE_NVJPEG_HW is set (else nvjpegCreateEx answers 7,
 * NVJPEG_STATUS_ARCH_MISMATCH, as on a GPU without the engine), and takes
 * no JPEG while CS_FAKE_NVJPEG_HW_REFUSE is set.  Misuse --
 * a decode before its stream was parsed, a batched decode before its
 * initialisation, a wrong output format -- fails with
 * NVJPEG_STATUS_INVALID_PARAMETER (2), and counts in fake_nvjpeg_misuse(). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <turbojpeg.h>

#define OK 0
#define INVALID 2
#define BAD_JPEG 3
#define ARCH_MISMATCH 7
#define RGBI 5

typedef struct fimg {
    unsigned char *channel[4];
    size_t pitch[4];
} fimg;

typedef struct handle {
    int backend;
} handle;

typedef struct jstream {
    const unsigned char *data;
    size_t len;
    int w, h, comps;
    int parsed; /* 0: not, 1: its header (nvjpegJpegStreamParseHeader), 2: the whole stream */
} jstream;

typedef struct state {
    int batched_init; /* nvjpegDecodeBatchedInitialize done, with RGBI */
    int host_done;    /* the decoupled host phase ran for `stream` */
    int moved;        /* ... and the transfer */
    const jstream *stream;
    int has_pinned, has_device;
} state;

typedef struct params {
    int fmt;
} params;

static int g_misuse;
int fake_nvjpeg_misuse(void) { return g_misuse; }

static int misuse(void) {
    g_misuse++;
    return INVALID;
}

static void *obj(size_t n) { return calloc(1, n); }

int nvjpegCreateEx(int backend, void *da, void *pa, unsigned flags, handle **h) {
    (void)da, (void)pa, (void)flags;
    if (backend == 3 && !getenv("CS_FAKE_NVJPEG_HW")) return ARCH_MISMATCH;
    if (!h) return misuse();
    *h = obj(sizeof **h);
    (*h)->backend = backend;
    return OK;
}
int nvjpegDestroy(handle *h) {
    free(h);
    return OK;
}
int nvjpegJpegStateCreate(handle *h, state **s) {
    if (!h || !s) return misuse();
    *s = obj(sizeof **s);
    return OK;
}
int nvjpegJpegStateDestroy(state *s) {
    free(s);
    return OK;
}
int nvjpegDecoderCreate(handle *h, int backend, int **d) {
    if (!h || !d || backend != 2) return misuse(); /* gpuprep.c asks for GPU_HYBRID only */
    *d = obj(sizeof **d);
    **d = backend;
    return OK;
}
int nvjpegDecoderDestroy(int *d) {
    free(d);
    return OK;
}
int nvjpegDecoderStateCreate(handle *h, int *d, state **s) {
    if (!h || !d || !s) return misuse();
    *s = obj(sizeof **s);
    return OK;
}
int nvjpegBufferPinnedCreate(handle *h, void *a, int **b) {
    (void)a;
    if (!h || !b) return misuse();
    *b = obj(sizeof **b);
    return OK;
}
int nvjpegBufferPinnedDestroy(int *b) {
    free(b);
    return OK;
}
int nvjpegBufferDeviceCreate(handle *h, void *a, int **b) {
    (void)a;
    if (!h || !b) return misuse();
    *b = obj(sizeof **b);
    return OK;
}
int nvjpegBufferDeviceDestroy(int *b) {
    free(b);
    return OK;
}
int nvjpegStateAttachPinnedBuffer(state *s, int *b) {
    if (!s || !b) return misuse();
    s->has_pinned = 1;
    return OK;
}
int nvjpegStateAttachDeviceBuffer(state *s, int *b) {
    if (!s || !b) return misuse();
    s->has_device = 1;
    return OK;
}
int nvjpegJpegStreamCreate(handle *h, jstream **js) {
    if (!h || !js) return misuse();
    *js = obj(sizeof **js);
    return OK;
}
int nvjpegJpegStreamDestroy(jstream *js) {
    free(js);
    return OK;
}
static int stream_parse(handle *h, const unsigned char *data, size_t len, int depth, jstream *js) {
    if (!h || !data || !js) return misuse();
    js->parsed = 0;
    tjhandle tj = tjInitDecompress();
    int w, h2, ss, cs;
    int r = tjDecompressHeader3(tj, data, (unsigned long)len, &w, &h2, &ss, &cs);
    tjDestroy(tj);
    if (r != 0) return BAD_JPEG;
    js->data = data;
    js->len = len;
    js->w = w;
    js->h = h2;
    js->comps = cs == TJCS_GRAY ? 1 : cs == TJCS_CMYK || cs == TJCS_YCCK ? 4 : 3;
    js->parsed = depth;
    return OK;
}
int nvjpegJpegStreamParse(handle *h, const unsigned char *data, size_t len, int save_meta, int save_stream,
                          jstream *js) {
    (void)save_meta;
    if (save_stream) return misuse(); /* the stream keeps our pointer */
    return stream_parse(h, data, len, 2, js);
}
/* the frame header only: enough for the queries and the batched decoder's
 * support check, not for the decoupled decoder, which decodes the stream */
int nvjpegJpegStreamParseHeader(handle *h, const unsigned char *data, size_t len, jstream *js) {
    return stream_parse(h, data, len, 1, js);
}
int nvjpegJpegStreamGetFrameDimensions(jstream *js, unsigned *w, unsigned *h) {
    if (!js || !js->parsed) return misuse();
    *w = (unsigned)js->w;
    *h = (unsigned)js->h;
    return OK;
}
int nvjpegJpegStreamGetComponentsNum(jstream *js, unsigned *n) {
    if (!js || !js->parsed) return misuse();
    *n = (unsigned)js->comps;
    return OK;
}
int nvjpegDecodeParamsCreate(handle *h, params **p) {
    if (!h || !p) return misuse();
    *p = obj(sizeof **p);
    return OK;
}
int nvjpegDecodeParamsDestroy(params *p) {
    free(p);
    return OK;
}
int nvjpegDecodeParamsSetOutputFormat(params *p, int fmt) {
    if (!p) return misuse();
    p->fmt = fmt;
    return OK;
}
int nvjpegDecoderJpegSupported(int *d, jstream *js, params *p, int *unsupported) {
    if (!d || !js || js->parsed != 2 || !p || !unsupported) return misuse();
    *unsupported = js->comps == 4; /* 0 means supported */
    return OK;
}

static int decode_into(const unsigned char *data, size_t len, int w, int h, fimg *dst) {
    if (!dst || !dst->channel[0] || dst->pitch[0] < (size_t)w * 3) return misuse();
    tjhandle tj = tjInitDecompress();
    int r = tjDecompress2(tj, data, (unsigned long)len, dst->channel[0], w, (int)dst->pitch[0], h, TJPF_RGB,
                          TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS);
    tjDestroy(tj);
    return r == 0 ? OK : BAD_JPEG;
}

int nvjpegDecodeJpegHost(handle *h, int *d, state *s, params *p, jstream *js) {
    if (!h || !d || !s || !p || !js || js->parsed != 2 || p->fmt != RGBI || !s->has_pinned || !s->has_device)
        return misuse();
    s->host_done = 1;
    s->moved = 0;
    s->stream = js;
    return OK;
}
int nvjpegDecodeJpegTransferToDevice(handle *h, int *d, state *s, jstream *js, void *cuda_stream) {
    (void)cuda_stream;
    if (!h || !d || !s || !s->host_done || s->stream != js) return misuse();
    s->moved = 1;
    return OK;
}
int nvjpegDecodeJpegDevice(handle *h, int *d, state *s, fimg *dst, void *cuda_stream) {
    (void)cuda_stream;
    if (!h || !d || !s || !s->moved) return misuse();
    const jstream *js = s->stream;
    s->host_done = s->moved = 0;
    return decode_into(js->data, js->len, js->w, js->h, dst);
}
int nvjpegDecodeBatchedInitialize(handle *h, state *s, int batch, int threads, int fmt) {
    if (!h || h->backend != 3 || !s || batch != 1 || threads < 1 || fmt != RGBI) return misuse();
    s->batched_init = 1;
    return OK;
}
int nvjpegDecodeBatchedSupported(handle *h, jstream *js, int *unsupported) {
    if (!h || h->backend != 3 || !js || !js->parsed || !unsupported) return misuse();
    /* CS_FAKE_NVJPEG_HW_REFUSE: what a progressive JPEG meets */
    *unsupported = js->comps == 4 || getenv("CS_FAKE_NVJPEG_HW_REFUSE") != NULL;
    return OK;
}
int nvjpegDecodeBatched(handle *h, state *s, const unsigned char *const *data, const size_t *lengths, fimg *dst,
                        void *cuda_stream) {
    (void)cuda_stream;
    if (!h || h->backend != 3 || !s || !s->batched_init || !data || !lengths) return misuse();
    tjhandle tj = tjInitDecompress();
    int w, h2, ss, cs;
    int r = tjDecompressHeader3(tj, data[0], (unsigned long)lengths[0], &w, &h2, &ss, &cs);
    tjDestroy(tj);
    if (r != 0) return BAD_JPEG;
    return decode_into(data[0], lengths[0], w, h2, dst);
}
