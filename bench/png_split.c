/* How to split a PNG's deflate over threads (src/imageio/encode.c,
 * cs_img_encode_png): libdeflate always ends the stream it writes, so only
 * the last part can be libdeflate's; the parts before it need a stream
 * that ends a part without ending the stream (zlib's Z_SYNC_FLUSH).  This
 * times, on the filtered rows of an 800x600 photo crop (what encode.c
 * deflates for an overlay):
 *   libdeflate level 1, one call;
 *   zlib level 1 (default and RLE strategies) split into T stripes on T
 *   threads, T = 1, 2, 4;
 *   the hybrid encode.c uses: T - 1 zlib stripes and a last libdeflate
 *   stripe given 1.5, 2 or 2.5 shares of the rows to the others' one,
 *   checked to inflate back to the rows.
 *
 *   gcc -O2 bench/png_split.c -o /tmp/png_split -lz -ldeflate -lturbojpeg -lpthread
 *   /tmp/png_split PHOTO.jpg     # e.g. bench/.gpu_bundle/photo.jpg (bench/gpu_bundle.sh
 *                                # or bench_image --make writes a 4000x3000 one)
 */
#include <libdeflate.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <turbojpeg.h>
#include <zlib.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

typedef struct stripe {
    const unsigned char *in;
    size_t n, cap, len;
    unsigned char *out;
    int last, strategy;
    struct libdeflate_compressor *ld; /* the last stripe through libdeflate (raw deflate) */
} stripe;

static void *deflate_stripe(void *arg) {
    stripe *s = arg;
    if (s->ld) {
        s->len = libdeflate_deflate_compress(s->ld, s->in, s->n, s->out, s->cap);
        return NULL;
    }
    z_stream z;
    memset(&z, 0, sizeof z);
    deflateInit2(&z, 1, Z_DEFLATED, -15, 8, s->strategy);
    z.next_in = (unsigned char *)s->in;
    z.avail_in = (uInt)s->n;
    z.next_out = s->out;
    z.avail_out = (uInt)s->cap;
    deflate(&z, s->last ? Z_FINISH : Z_SYNC_FLUSH);
    s->len = s->cap - z.avail_out;
    deflateEnd(&z);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: png_split PHOTO.jpg (at least 1000x750 after a 1/4 DCT scale)\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) return perror(argv[1]), 1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    unsigned char *jpg = malloc((size_t)n);
    if (fread(jpg, 1, (size_t)n, f) != (size_t)n) return 1;
    fclose(f);
    tjhandle tj = tjInitDecompress();
    int W, H, ss, cs;
    if (tjDecompressHeader3(tj, jpg, (unsigned long)n, &W, &H, &ss, &cs)) return fprintf(stderr, "not a JPEG\n"), 1;
    W = (W + 3) / 4, H = (H + 3) / 4;
    const int w = 800, h = 600;
    if (W < w || H < h) return fprintf(stderr, "photo too small\n"), 1;
    unsigned char *px = malloc((size_t)W * H * 3);
    if (tjDecompress2(tj, jpg, (unsigned long)n, px, W, 0, H, TJPF_RGB, 0)) return 1;
    /* filter 1 (Sub) rows, as encode.c writes them */
    const size_t row = (size_t)w * 3 + 1, N = row * h;
    unsigned char *raw = malloc(N), *out = malloc(2 * N);
    for (int y = 0; y < h; y++) {
        unsigned char *d = raw + y * row;
        const unsigned char *s = px + (size_t)y * W * 3;
        d[0] = 1;
        memcpy(d + 1, s, 3);
        for (int i = 3; i < w * 3; i++) d[1 + i] = (unsigned char)(s[i] - s[i - 3]);
    }
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(1);
    for (int r = 0; r < 5; r++) {
        double t = now_ms();
        size_t k = libdeflate_zlib_compress(c, raw, N, out, 2 * N);
        printf("libdeflate level 1, 1 call           %6.2f ms  %zu bytes\n", now_ms() - t, k);
    }
    static const int strategies[2] = {Z_DEFAULT_STRATEGY, Z_RLE};
    for (int si = 0; si < 2; si++)
        for (int T = 1; T <= 4; T *= 2)
            for (int r = 0; r < 5; r++) {
                stripe st[4];
                pthread_t th[4];
                const size_t per = (size_t)((h + T - 1) / T) * row;
                double t = now_ms();
                for (int i = 0; i < T; i++) {
                    size_t o = i * per, e = o + per > N ? N : o + per;
                    st[i] = (stripe){raw + o, e - o, e - o + 1024, 0, malloc(e - o + 1024), i == T - 1, strategies[si]};
                    pthread_create(&th[i], NULL, deflate_stripe, &st[i]);
                }
                size_t tot = 0;
                for (int i = 0; i < T; i++) {
                    pthread_join(th[i], NULL);
                    tot += st[i].len;
                    free(st[i].out);
                }
                printf("zlib level 1 %-7s %d stripe(s)       %6.2f ms  %zu bytes\n", si ? "RLE" : "default", T,
                       now_ms() - t, tot);
            }
    /* hybrid: T - 1 zlib stripes end with Z_SYNC_FLUSH (byte-aligned, not
     * final), the last and largest stripe is one libdeflate call; the last
     * stripe gets WEIGHT/(T - 1 + WEIGHT) of the rows because libdeflate is
     * about twice as fast per byte */
    struct libdeflate_compressor *lds = libdeflate_alloc_compressor(1);
    for (int T = 2; T <= 4; T *= 2)
        for (int wq = 3; wq <= 5; wq++) { /* weight = wq / 2 */
            for (int r = 0; r < 5; r++) {
                stripe st[4];
                pthread_t th[4];
                size_t rows_last = (size_t)((double)h * wq / 2 / (T - 1 + wq / 2.0));
                size_t rows_each = (h - rows_last) / (T - 1);
                double t = now_ms();
                size_t o = 0;
                for (int i = 0; i < T; i++) {
                    size_t e = i == T - 1 ? N : o + rows_each * row;
                    st[i] = (stripe){raw + o, e - o, e - o + 1024, 0, malloc(e - o + 1024), i == T - 1,
                                     Z_DEFAULT_STRATEGY, i == T - 1 ? lds : NULL};
                    pthread_create(&th[i], NULL, deflate_stripe, &st[i]);
                    o = e;
                }
                size_t tot = 0;
                unsigned char *cat = malloc(2 * N);
                for (int i = 0; i < T; i++) {
                    pthread_join(th[i], NULL);
                    memcpy(cat + tot, st[i].out, st[i].len);
                    tot += st[i].len;
                    free(st[i].out);
                }
                double ms = now_ms() - t;
                /* check: the concatenation inflates back to the rows */
                z_stream z;
                memset(&z, 0, sizeof z);
                inflateInit2(&z, -15);
                unsigned char *back = malloc(N + 16);
                z.next_in = cat, z.avail_in = (uInt)tot, z.next_out = back, z.avail_out = (uInt)N + 16;
                int zr = inflate(&z, Z_FINISH);
                int ok = zr == Z_STREAM_END && z.total_out == N && !memcmp(back, raw, N);
                inflateEnd(&z);
                free(back), free(cat);
                printf("hybrid %d stripe(s), last weight %.1f  %6.2f ms  %zu bytes  %s\n", T, wq / 2.0, ms, tot,
                       ok ? "inflates back" : "BROKEN");
            }
        }
    libdeflate_free_compressor(lds);
    libdeflate_free_compressor(c);
    tjDestroy(tj);
    free(jpg), free(px), free(raw), free(out);
    return 0;
}
