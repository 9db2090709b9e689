/* Host-side helpers of the CUDA backend that need no GPU: number formats,
 * weight layouts, strided walks.  Kept apart from cuda_backend.c so that
 * tests/unit/test_cuda.c can check them on any machine. */
#include "cuda/cuda_internal.h"

#include <string.h>

static uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

uint16_t cs_cuda_f32_to_bf16(float x) {
    uint32_t u = f32_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* nearest even */
    return (uint16_t)(u >> 16);
}

float cs_cuda_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t cs_cuda_f32_to_f16(float x) {
    uint32_t u = f32_bits(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: Inf */
    if (a < 0x38800000u) {
        /* below the smallest normal half (2^-14): a subnormal or zero.
         * value = a as float; half subnormal unit = 2^-24 */
        if (a < 0x33000000u) return (uint16_t)sign; /* < 2^-25: rounds to 0 */
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        int shift = (int)(126 - e); /* 14..24: bits dropped from the 24-bit mantissa */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t e = (a >> 23) - 112, m = a & 0x7fffffu; /* rebias 127 -> 15 */
    uint32_t h = (e << 10) | (m >> 13), rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* may carry into the exponent: fine */
    return (uint16_t)(sign | h);
}

float cs_cuda_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    if (e == 0) {
        if (m == 0) u = sign;
        else { /* subnormal: normalise */
            int k = -1;
            do {
                k++;
                m <<= 1;
            } while (!(m & 0x400u));
            u = sign | ((uint32_t)(112 - k) << 23) | ((m & 0x3ffu) << 13);
        }
    } else if (e == 31) {
        u = sign | 0x7f800000u | (m << 13);
    } else {
        u = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

size_t cs_cuda_dt_size(cs_cuda_dt dt) { return dt == CS_CUDA_F32 ? 4 : 2; }

void cs_cuda_convert(cs_cuda_dt dt, const float *src, void *dst, int64_t n) {
    if (dt == CS_CUDA_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++)
        d[i] = dt == CS_CUDA_F16 ? cs_cuda_f32_to_f16(src[i]) : cs_cuda_f32_to_bf16(src[i]);
}

void cs_cuda_oihw_to_ohwi(const float *src, float *dst, int64_t O, int64_t I, int64_t KH, int64_t KW) {
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < I; i++)
            for (int64_t h = 0; h < KH; h++)
                for (int64_t w = 0; w < KW; w++)
                    dst[((o * KH + h) * KW + w) * I + i] = src[((o * I + i) * KH + h) * KW + w];
}

void cs_cuda_nhwc_strides(const int64_t dims[4], int64_t strides[4]) {
    strides[1] = 1;
    strides[3] = dims[1];
    strides[2] = dims[1] * dims[3];
    strides[0] = dims[1] * dims[2] * dims[3];
}

void cs_cuda_dense_strides(int nd, const int64_t *dims, int64_t *strides) {
    int64_t acc = 1;
    for (int i = nd - 1; i >= 0; i--) {
        strides[i] = acc;
        acc *= dims[i];
    }
}

int cs_cuda_walk_make(cs_cuda_walk *w, int nd, const int64_t *dims, const int64_t *so,
                      const int64_t *sa, const int64_t *sb) {
    int64_t d[16], o[16], a[16], b[16];
    int n = 0;
    if (nd > 16) return -1;
    for (int i = 0; i < nd; i++) {
        if (dims[i] == 1) continue;
        d[n] = dims[i];
        o[n] = so[i];
        a[n] = sa[i];
        b[n] = sb ? sb[i] : 0;
        n++;
    }
    /* stable insertion sort, descending output stride */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && o[j] > o[j - 1]; j--) {
            int64_t t;
            t = d[j], d[j] = d[j - 1], d[j - 1] = t;
            t = o[j], o[j] = o[j - 1], o[j - 1] = t;
            t = a[j], a[j] = a[j - 1], a[j - 1] = t;
            t = b[j], b[j] = b[j - 1], b[j - 1] = t;
        }
    /* merge j into j-1 when stepping j's full extent equals one step of j-1
     * in every operand */
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (m > 0 && o[m - 1] == o[i] * d[i] && a[m - 1] == a[i] * d[i] && b[m - 1] == b[i] * d[i]) {
            d[m - 1] *= d[i];
            o[m - 1] = o[i];
            a[m - 1] = a[i];
            b[m - 1] = b[i];
            continue;
        }
        d[m] = d[i];
        o[m] = o[i];
        a[m] = a[i];
        b[m] = b[i];
        m++;
    }
    if (m > CS_CUDA_MAXD) return -1;
    memset(w, 0, sizeof *w);
    w->nd = m;
    for (int i = 0; i < m; i++) {
        w->dims[i] = d[i];
        w->so[i] = o[i];
        w->sa[i] = a[i];
        w->sb[i] = b[i];
    }
    if (m == 0) { /* a single element */
        w->nd = 1;
        w->dims[0] = 1;
    }
    return 0;
}
