/* Image pipeline benchmark (bench/bench_image.sh builds and runs it).
 *
 *   bench_image --make PATH      write the procedural 4000x3000 q92 JPEG
 *   bench_image PATH [RUNS]      time PATH -> model-ready tensor, and
 *                                overlay + PNG encode at 800 px
 *   bench_image --encode PATH RUNS WAYS
 *                                the server's encode stage (overlay of a
 *                                display-size image + its PNG) in one
 *                                thread and split WAYS ways over a helper
 *                                team (cs_img_par), alternately
 *
 * Single-threaded by construction (nothing in imageio spawns threads),
 * except for --encode's split runs.  Prints one "name median_ms min_ms"
 * line per stage. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camserve/imageio.h"
#include "util/team.h"

static void team_run(void *ctx, int n, void (*fn)(void *arg, int i), void *arg) {
    cs_team_run(ctx, n, fn, arg);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *name, double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    printf("%-22s median %7.2f ms  min %7.2f ms\n", name, t[n / 2], t[0]);
}

/* Smooth photo-like gradients plus sensor-like noise and some edges, so the
 * entropy coder has realistic work (q92 of pure gradients would be tiny). */
static int make_photo(const char *path) {
    const int w = 4000, h = 3000;
    cs_image img = {.width = w, .height = h, .channels = 3, .orig_width = w, .orig_height = h};
    img.rgb = malloc((size_t)w * h * 3);
    if (!img.rgb) return 1;
    uint32_t s = 1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            s = s * 1664525u + 1013904223u;
            double fx = (double)x / w, fy = (double)y / h;
            int n = (int)(s >> 28) - 8;
            int edge = ((x / 150 + y / 110) % 7 == 0) ? 40 : 0;
            double v[3] = {120 + 90 * sin(7 * fx + 3 * fy) + 20 * sin(60 * fx * fy),
                           110 + 80 * cos(5 * fy - 2 * fx) + 15 * sin(45 * fy),
                           90 + 70 * sin(11 * fx * fy + 1)};
            for (int c = 0; c < 3; c++) {
                int q = (int)v[c] + n + edge;
                img.rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
            }
        }
    uint8_t *jpg = NULL;
    size_t len = 0;
    cs_error err;
    if (cs_img_encode(&img, CS_IMG_FORMAT_JPEG, 92, &jpg, &len, &err) != CS_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(jpg, 1, len, f) != len || fclose(f) != 0) return 1;
    printf("wrote %s: 4000x3000 q92, %.2f MB\n", path, len / 1e6);
    free(jpg);
    cs_img_free(&img);
    return 0;
}

/* The server's encode stage: its prep cache keeps the image at display size,
 * so the overlay only blends; then the overlay's PNG.  In one thread and
 * split WAYS ways over a helper team, alternately, so the machine's noise
 * hits both. */
static int bench_encode(const char *path, int runs, int ways) {
    double *to = calloc((size_t)runs, sizeof(double)), *te = calloc((size_t)runs, sizeof(double));
    cs_preproc p = cs_img_preproc_default();
    float cam[49];
    for (int i = 0; i < 49; i++) cam[i] = (float)((i * 37) % 49) / 48.0f;
    cs_error err;
    int dw = 0, dh = 0;
    cs_team *team = NULL;
    int nw, nh;
    cs_img_preproc_need(&p, &nw, &nh);
    cs_image img = {0}, disp = {0};
    if (!to || !te || cs_team_create(ways - 1, &team, &err) != CS_OK ||
        cs_img_load(path, NULL, nw, nh, &img, &err) != CS_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    float box[4];
    cs_img_preproc_crop_box(&p, &img, box);
    if (cs_img_display_size(img.width, img.height, 800, &dw, &dh)) {
        const float sx = (float)dw / img.width, sy = (float)dh / img.height;
        box[0] *= sx, box[1] *= sy, box[2] *= sx, box[3] *= sy;
        if (cs_img_resize(&img, dw, dh, CS_IMG_INTERP_BILINEAR, &disp, &err) != CS_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
    } else {
        disp = img;
        img = (cs_image){0};
    }
    const cs_img_par par = {.ways = ways, .run = team_run, .ctx = team};
    size_t len1 = 0, lenw = 0;
    for (int r = 0; r < runs; r++)
        for (int k = 0; k < 2; k++) {
            const cs_img_par *pp = k ? &par : NULL;
            double t0 = cs_now_ms();
            cs_image ov = {0};
            uint8_t *png = NULL;
            size_t n = 0;
            if (cs_img_overlay_par(&disp, cam, 7, 7, box, CS_IMG_CMAP_JET, 0.5f, 800, pp, &ov, &err) != CS_OK ||
                cs_img_encode_png(&ov, pp, &png, &n, &err) != CS_OK) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            (k ? te : to)[r] = cs_now_ms() - t0;
            *(k ? &lenw : &len1) = n;
            free(png);
            cs_img_free(&ov);
        }
    printf("encode stage: %dx%d overlay + PNG; %.0f KB in one part, %.0f KB in %d\n", disp.width,
           disp.height, len1 / 1e3, lenw / 1e3, ways);
    char name[32];
    report("encode stage, 1 way", to, runs);
    snprintf(name, sizeof name, "encode stage, %d ways", ways);
    report(name, te, runs);
    cs_team_destroy(team);
    cs_img_free(&img);
    cs_img_free(&disp);
    free(to);
    free(te);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--make")) return make_photo(argv[2]);
    if (argc == 5 && !strcmp(argv[1], "--encode")) {
        const int runs = atoi(argv[3]), ways = atoi(argv[4]);
        if (runs < 1 || runs > 1000 || ways < 2 || ways > CS_IMG_PAR_MAX) return 2;
        return bench_encode(argv[2], runs, ways);
    }
    if (argc < 2) {
        fprintf(stderr, "usage: bench_image --make PATH | bench_image PATH [RUNS] | bench_image --encode PATH RUNS WAYS\n");
        return 2;
    }
    const int runs = argc > 2 ? atoi(argv[2]) : 15;
    if (runs < 1 || runs > 1000) return 2;
    double *td = calloc((size_t)runs, sizeof(double)), *tp = calloc((size_t)runs, sizeof(double));
    double *tt = calloc((size_t)runs, sizeof(double)), *to = calloc((size_t)runs, sizeof(double));
    double *te = calloc((size_t)runs, sizeof(double));
    cs_preproc p = cs_img_preproc_default();
    float *tensor = malloc(sizeof(float) * 3 * 224 * 224);
    float cam[49];
    for (int i = 0; i < 49; i++) cam[i] = (float)((i * 37) % 49) / 48.0f;
    cs_error err;
    int dw = 0, dh = 0;
    size_t png_len = 0;
    for (int r = 0; r < runs; r++) {
        int nw, nh;
        cs_img_preproc_need(&p, &nw, &nh);
        double t0 = cs_now_ms();
        cs_image img = {0};
        if (cs_img_load(argv[1], NULL, nw, nh, &img, &err) != CS_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        double t1 = cs_now_ms();
        if (cs_img_preprocess(&img, &p, tensor, &err) != CS_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        double t2 = cs_now_ms();
        float box[4];
        cs_img_preproc_crop_box(&p, &img, box);
        cs_image ov = {0};
        if (cs_img_overlay(&img, cam, 7, 7, box, CS_IMG_CMAP_JET, 0.5f, 800, &ov, &err) != CS_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        double t3 = cs_now_ms();
        uint8_t *png = NULL;
        if (cs_img_encode(&ov, CS_IMG_FORMAT_PNG, 0, &png, &png_len, &err) != CS_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        double t4 = cs_now_ms();
        td[r] = t1 - t0;
        tp[r] = t2 - t1;
        tt[r] = t2 - t0;
        to[r] = t3 - t2;
        te[r] = t4 - t2;
        dw = img.width;
        dh = img.height;
        if (r == 0)
            printf("decoded at %dx%d (from %dx%d), overlay %dx%d, png %.0f KB\n", img.width,
                   img.height, img.orig_width, img.orig_height, ov.width, ov.height, png_len / 1e3);
        free(png);
        cs_img_free(&ov);
        cs_img_free(&img);
    }
    (void)dw;
    (void)dh;
    report("decode", td, runs);
    report("preprocess", tp, runs);
    report("jpeg->tensor", tt, runs);
    report("overlay", to, runs);
    report("overlay+png", te, runs);

    free(td);
    free(tp);
    free(tt);
    free(to);
    free(te);
    free(tensor);
    return 0;
}
