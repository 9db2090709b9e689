/* The prepared-model cache: an entry is written on the first load, used on
 * the next, and a corrupt, truncated or stale one is rebuilt, never trusted.
 * Results are identical either way. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "camserve/engine.h"
#include "camserve/npy.h"

#include <dirent.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GOLDEN CS_SOURCE_DIR "/tests/golden"

static char dir[256], model[512];

/* The single entry in dir (there is one per model file). */
static int entry(char *out, size_t len) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".csm")) {
            snprintf(out, len, "%s/%s", dir, e->d_name);
            n++;
        }
    if (d) closedir(d);
    return n;
}

static void run(cs_model *m, const cs_npy *in, float *logits, float *act, float *grad) {
    cs_error err = {0};
    cs_session *s;
    assert_int_equal(cs_session_create(m, &s, &err), CS_OK);
    int layer = cs_model_default_layer(m), cls[2] = {1, 7};
    assert_int_equal(cs_session_forward_keep(s, in->data, 2, &layer, 1, logits, &err), CS_OK);
    assert_int_equal(cs_session_backward(s, cls, &err), CS_OK);
    const float *a, *g;
    int64_t d[4];
    assert_int_equal(cs_session_layer(s, layer, &a, &g, d, &err), CS_OK);
    memcpy(act, a, (size_t)(d[0] * d[1] * d[2] * d[3]) * sizeof(float));
    memcpy(grad, g, (size_t)(d[0] * d[1] * d[2] * d[3]) * sizeof(float));
    cs_session_free(s);
}

static void test_prepared(void **state) {
    (void)state;
    cs_error err = {0};
    snprintf(dir, sizeof dir, "/tmp/cs_prepared_test_%d", (int)getpid());
    /* a private copy: the entry is keyed by the file's identity */
    snprintf(model, sizeof model, "%s/model.onnx", dir);
    mkdir(dir, 0755);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp %s/resnet_bottleneck/model.onnx %s", GOLDEN, model);
    assert_int_equal(system(cmd), 0);
    cs_npy in;
    assert_int_equal(cs_npy_load(GOLDEN "/resnet_bottleneck/input.npy", &in, &err), CS_OK);

    static float l0[20], l1[20], a0[1 << 16], a1[1 << 16], g0[1 << 16], g1[1 << 16];
    cs_model *m;
    cs_model_options plain = {0}, prep = {.prepared_dir = dir};
    assert_int_equal(cs_model_load(model, &plain, &m, &err), CS_OK);
    run(m, &in, l0, a0, g0);
    cs_model_free(m);

    /* first load writes the entry, the second maps it */
    assert_int_equal(cs_model_load(model, &prep, &m, &err), CS_OK);
    assert_false(cs_model_from_cache(m));
    cs_model_free(m);
    char path[600];
    assert_int_equal(entry(path, sizeof path), 1);
    assert_int_equal(cs_model_load(model, &prep, &m, &err), CS_OK);
    assert_true(cs_model_from_cache(m));
    uint8_t dg[32], ref[32];
    assert_true(cs_model_digest(m, dg));
    {   /* the digest is the file's SHA-256 */
        FILE *f = fopen(model, "rb");
        static unsigned char buf[4 << 20];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        unsigned int k;
        EVP_Digest(buf, n, ref, &k, EVP_sha256(), NULL);
        assert_memory_equal(dg, ref, 32);
    }
    run(m, &in, l1, a1, g1);
    assert_memory_equal(l0, l1, sizeof l0);
    assert_memory_equal(a0, a1, sizeof a0);
    assert_memory_equal(g0, g1, sizeof g0);
    assert_true(cs_model_num_layers(m) > 10);
    cs_model_free(m);

    /* a flipped byte deep in the payload: detected, rebuilt, same results */
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    FILE *f = fopen(path, "r+b");
    fseek(f, sb.st_size / 2, SEEK_SET);
    int c = fgetc(f);
    fseek(f, sb.st_size / 2, SEEK_SET);
    fputc(c ^ 0x40, f);
    fclose(f);
    assert_int_equal(cs_model_load(model, &prep, &m, &err), CS_OK);
    assert_false(cs_model_from_cache(m));
    run(m, &in, l1, a1, g1);
    assert_memory_equal(l0, l1, sizeof l0);
    cs_model_free(m);
    assert_int_equal(cs_model_load(model, &prep, &m, &err), CS_OK); /* rewritten */
    assert_true(cs_model_from_cache(m));
    cs_model_free(m);

    /* truncated */
    assert_int_equal(truncate(path, sb.st_size - 1000), 0);
    assert_int_equal(cs_model_load(model, &prep, &m, &err), CS_OK);
    assert_false(cs_model_from_cache(m));
    cs_model_free(m);

    /* bf16 on the CPU packs other weights: its own entry beside the fp32
     * one (neither retires the other), used on its next load, with the
     * results of an uncached bf16 load */
    if (cs_cpu_has_bf16()) {
        assert_int_equal(cs_model_load(model, &prep, &m, &err), CS_OK); /* the fp32 entry again */
        assert_true(cs_model_from_cache(m));
        cs_model_free(m);
        cs_model_options bplain = {.precision = CS_PRECISION_BF16},
                         bprep = {.prepared_dir = dir, .precision = CS_PRECISION_BF16};
        static float lb[20], ab[1 << 16], gb[1 << 16];
        assert_int_equal(cs_model_load(model, &bplain, &m, &err), CS_OK);
        run(m, &in, lb, ab, gb);
        cs_model_free(m);
        assert_int_equal(cs_model_load(model, &bprep, &m, &err), CS_OK);
        assert_false(cs_model_from_cache(m));
        assert_int_equal(cs_model_precision(m), CS_PRECISION_BF16);
        cs_model_free(m);
        assert_int_equal(entry(path, sizeof path), 2);
        assert_int_equal(cs_model_load(model, &bprep, &m, &err), CS_OK);
        assert_true(cs_model_from_cache(m));
        assert_int_equal(cs_model_precision(m), CS_PRECISION_BF16);
        run(m, &in, l1, a1, g1);
        assert_memory_equal(lb, l1, sizeof lb);
        assert_memory_equal(ab, a1, sizeof ab);
        assert_memory_equal(gb, g1, sizeof gb);
        assert_true(memcmp(l0, lb, sizeof l0) != 0); /* bf16 did compute in bf16 */
        cs_model_free(m);
        assert_int_equal(cs_model_load(model, &prep, &m, &err), CS_OK);
        assert_true(cs_model_from_cache(m));
        assert_int_equal(cs_model_precision(m), CS_PRECISION_FP32);
        run(m, &in, l1, a1, g1);
        assert_memory_equal(l0, l1, sizeof l0);
        cs_model_free(m);
    } else {
        printf("test_prepared: no native bf16 on this CPU, the bf16 entry is not checked\n");
    }

    /* a changed model file is a new entry, never the old one */
    snprintf(cmd, sizeof cmd, "cp %s/resnet_basic/model.onnx %s", GOLDEN, model);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(cs_model_load(model, &prep, &m, &err), CS_OK);
    assert_false(cs_model_from_cache(m));
    cs_model_info info;
    cs_model_get_info(m, &info);
    assert_int_equal(info.num_nodes, 41); /* resnet_basic's graph, not the bottleneck's */
    cs_model_free(m);

    cs_npy_free(&in);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_prepared)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
