/* Unit tests for src/models/: the embedded default model (loads from the
 * asset table, classifies tests/data/eval_small), the evaluation metrics on
 * synthetic maps whose answers are known, the eval folder scanner, and the
 * pull catalog / hashing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "camserve/models.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the default model ------------------------------------------------- */

/* Splits text into lines (in place); returns the count. */
static int split_lines(char *text, char **lines, int max) {
    int n = 0;
    char *p = text;
    while (*p && n < max) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        lines[n++] = p;
        if (!nl) break;
        p = nl + 1;
    }
    return n;
}

static void test_default_model_loads(void **state) {
    (void)state;
    const void *onnx;
    size_t len;
    const char *json, *labels;
    cs_error err = {0};
    assert_int_equal(cs_models_default(&onnx, &len, &json, &labels, &err), CS_OK);
    assert_true(len > 1000 && len <= 8u * 1024 * 1024);
    cs_model *m = NULL;
    assert_int_equal(cs_model_load_buffer(onnx, len, NULL, &m, &err), CS_OK);
    cs_model_info info;
    cs_model_get_info(m, &info);
    assert_int_equal(info.input_dims[1], 3);
    assert_true(info.input_dims[0] < 0); /* dynamic batch */
    cs_preproc pp = cs_img_preproc_default();
    char *lab = NULL;
    assert_int_equal(cs_img_preproc_from_json(json, &pp, &lab, &err), CS_OK);
    assert_int_equal(pp.crop_h, info.input_dims[2]);
    assert_int_equal(pp.crop_w, info.input_dims[3]);
    assert_string_equal(lab, "labels.txt");
    free(lab);
    char *copy = strdup(labels), *lines[64];
    assert_int_equal(split_lines(copy, lines, 64), info.num_classes);
    assert_true(info.num_classes >= 10);
    assert_true(cs_model_default_layer(m) >= 0);
    free(copy);
    cs_model_free(m);
}

static void test_default_model_classifies_eval_small(void **state) {
    (void)state;
    const void *onnx;
    size_t len;
    const char *json, *labels;
    cs_error err = {0};
    assert_int_equal(cs_models_default(&onnx, &len, &json, &labels, &err), CS_OK);
    cs_model *m = NULL;
    assert_int_equal(cs_model_load_buffer(onnx, len, NULL, &m, &err), CS_OK);
    cs_preproc pp = cs_img_preproc_default();
    assert_int_equal(cs_img_preproc_from_json(json, &pp, NULL, &err), CS_OK);
    char *copy = strdup(labels), *lines[64];
    int nl = split_lines(copy, lines, 64);
    cs_models_eval_set set;
    assert_int_equal(cs_models_eval_set_load(CS_SOURCE_DIR "/tests/data/eval_small",
                                             (const char *const *)lines, nl, &set, &err),
                     CS_OK);
    assert_true(set.n >= 24);
    cs_session *s = NULL;
    assert_int_equal(cs_session_create(m, &s, &err), CS_OK);
    cs_models_eval_options o = cs_models_eval_default_options();
    o.nmethods = 0;
    cs_models_eval_result r;
    if (cs_models_eval_run(m, s, &pp, &set, &o, &r, &err) != CS_OK) fail_msg("%s", err.msg);
    print_message("default model on eval_small: %d/%d\n", r.correct, r.n);
    assert_int_equal(r.n, set.n);
    assert_true(r.correct >= 0.9 * r.n);
    cs_models_eval_result_free(&r);
    cs_session_free(s);
    cs_models_eval_set_free(&set);
    free(copy);
    cs_model_free(m);
}

/* ---- metrics on synthetic maps ----------------------------------------- */

/* A 20x10 mask whose right half (x >= 10) is the object. */
static void right_half_mask(uint8_t *mask) {
    for (int y = 0; y < 10; y++)
        for (int x = 0; x < 20; x++) mask[y * 20 + x] = x >= 10 ? 255 : 0;
}

static void test_pointing_game(void **state) {
    (void)state;
    uint8_t mask[200];
    right_half_mask(mask);
    const float full[4] = {0, 0, 20, 10};
    float map[16] = {0};
    map[1 * 4 + 3] = 1.f; /* column 3: centre x = 17.5 */
    assert_int_equal(cs_models_pointing_hit(map, 4, 4, mask, 20, 10, full, 0), 1);
    memset(map, 0, sizeof map);
    map[2 * 4 + 1] = 1.f; /* column 1: x = 7.5 */
    assert_int_equal(cs_models_pointing_hit(map, 4, 4, mask, 20, 10, full, 0), 0);
    /* through a crop box: the map covers x in [5, 15); column 1 of 2 -> x = 12.5 */
    const float crop[4] = {5, 0, 15, 10};
    float m2[4] = {0, 1, 0, 0};
    assert_int_equal(cs_models_pointing_hit(m2, 2, 2, mask, 20, 10, crop, 0), 1);
    float m3[4] = {1, 0, 0, 0};
    assert_int_equal(cs_models_pointing_hit(m3, 2, 2, mask, 20, 10, crop, 0), 0);
    /* a peak on padding outside the image is a miss */
    const float padded[4] = {-10, 0, 30, 10}; /* centres at -5, 5, 15, 25 */
    float m4[4] = {0, 0, 0, 1};
    assert_int_equal(cs_models_pointing_hit(m4, 1, 4, mask, 20, 10, padded, 0), 0);
    float m5[4] = {0, 0, 1, 0};
    assert_int_equal(cs_models_pointing_hit(m5, 1, 4, mask, 20, 10, padded, 0), 1);
    /* tolerance in map pixels: column 1 of 4 (x = 7.5) is 3 mask pixels =
     * 0.6 map pixels from the first object pixel's centre (x = 10.5) */
    float m6[16] = {0};
    m6[2 * 4 + 1] = 1.f;
    assert_int_equal(cs_models_pointing_hit(m6, 4, 4, mask, 20, 10, full, 0.4f), 0);
    assert_int_equal(cs_models_pointing_hit(m6, 4, 4, mask, 20, 10, full, 0.7f), 1);
}

static void test_energy_in_mask(void **state) {
    (void)state;
    uint8_t mask[200];
    right_half_mask(mask);
    const float full[4] = {0, 0, 20, 10};
    float map[8] = {1, 1, 3, 3, 1, 1, 3, 3}; /* 2 rows x 4 columns */
    assert_float_equal(cs_models_energy_in_mask(map, 2, 4, mask, 20, 10, full), 0.75, 1e-9);
    float uniform[8] = {2, 2, 2, 2, 2, 2, 2, 2};
    assert_float_equal(cs_models_energy_in_mask(uniform, 2, 4, mask, 20, 10, full), 0.5, 1e-9);
    float zero[8] = {0};
    assert_float_equal(cs_models_energy_in_mask(zero, 2, 4, mask, 20, 10, full), 0.0, 0);
}

static void test_auc(void **state) {
    (void)state;
    float one[3] = {1, 1, 1};
    assert_float_equal(cs_models_auc(one, 3), 1.0, 1e-9);
    float down[2] = {1, 0};
    assert_float_equal(cs_models_auc(down, 2), 0.5, 1e-9);
    float lin[11];
    for (int i = 0; i <= 10; i++) lin[i] = 1.f - i / 10.f;
    assert_float_equal(cs_models_auc(lin, 11), 0.5, 1e-6);
    float step[11] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}; /* drops at once: 0.05 */
    assert_float_equal(cs_models_auc(step, 11), 0.05, 1e-6);
}

static void test_perturb(void **state) {
    (void)state;
    const float x[4] = {1, 2, 3, 4}; /* one channel, 2x2 */
    const float map[4] = {0.1f, 0.9f, 0.5f, 0.2f}; /* rank: 1, 2, 3, 0 */
    float out[5 * 4];
    cs_error err = {0};
    assert_int_equal(cs_models_perturb(x, 1, 2, 2, map, 4, 0, out, &err), CS_OK);
    const float del[5][4] = {{1, 2, 3, 4}, {1, 2.5f, 3, 4}, {1, 2.5f, 2.5f, 4}, {1, 2.5f, 2.5f, 2.5f},
                             {2.5f, 2.5f, 2.5f, 2.5f}};
    for (int k = 0; k < 5; k++)
        for (int i = 0; i < 4; i++) assert_float_equal(out[k * 4 + i], del[k][i], 1e-6);
    assert_int_equal(cs_models_perturb(x, 1, 2, 2, map, 4, 1, out, &err), CS_OK);
    for (int i = 0; i < 4; i++) assert_float_equal(out[4 * 4 + i], x[i], 0); /* all inserted */
    assert_float_equal(out[1 * 4 + 1], 2.0f, 0);                          /* the top pixel first */
    double mean0 = (out[0] + out[1] + out[2] + out[3]) / 4;                 /* blur keeps the mean */
    assert_float_equal(mean0, 2.5, 1e-5);
    assert_true(fabsf(out[0] - out[3]) < 3.0f); /* and flattens it */
    assert_int_equal(cs_models_perturb(x, 1, 2, 2, map, 0, 0, out, &err), CS_EINVAL);
}

/* ---- the eval folder ----------------------------------------------------- */

static void touch(const char *dir, const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fclose(f);
}

static void test_eval_set_layout(void **state) {
    (void)state;
    char root[] = "/tmp/cs_test_models_XXXXXX";
    assert_non_null(mkdtemp(root));
    char d[600];
    FILE *f;
    snprintf(d, sizeof d, "%s/labels.txt", root);
    assert_non_null(f = fopen(d, "w"));
    fputs("zero\none\ntwo\n", f);
    fclose(f);
    snprintf(d, sizeof d, "%s/two", root);
    mkdir(d, 0755);
    touch(d, "b.jpg");
    touch(d, "a.png");
    touch(d, "a.mask.png");
    touch(d, "notes.txt");
    snprintf(d, sizeof d, "%s/zero", root);
    mkdir(d, 0755);
    touch(d, "c.JPEG");
    cs_models_eval_set s;
    cs_error err = {0};
    assert_int_equal(cs_models_eval_set_load(root, NULL, 0, &s, &err), CS_OK);
    assert_int_equal(s.nclasses, 3);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.items[0].label, 2); /* "two" sorts before "zero" */
    assert_non_null(strstr(s.items[0].image, "/two/a.png"));
    assert_non_null(s.items[0].mask);
    assert_non_null(strstr(s.items[0].mask, "/two/a.mask.png"));
    assert_null(s.items[1].mask);
    assert_int_equal(s.items[2].label, 0);
    cs_models_eval_set_free(&s);
    /* a folder that names no class */
    snprintf(d, sizeof d, "%s/three", root);
    mkdir(d, 0755);
    touch(d, "x.jpg");
    assert_int_equal(cs_models_eval_set_load(root, NULL, 0, &s, &err), CS_ENOTFOUND);
    assert_non_null(strstr(err.msg, "three"));
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

/* ---- pull ----------------------------------------------------------------- */

static void test_catalog(void **state) {
    (void)state;
    const char *need[] = {"resnet50", "mobilenetv2", "efficientnet-lite4", "densenet121", "squeezenet"};
    for (int i = 0; i < 5; i++) {
        const cs_models_entry *e = cs_models_find(need[i]);
        assert_non_null(e);
        assert_int_equal(strncmp(e->url, "https://", 8), 0);
        assert_non_null(e->sha256);
        assert_int_equal(strlen(e->sha256), 64);
        assert_true(strspn(e->sha256, "0123456789abcdef") == 64);
        assert_true(e->size > 1000000);
        cs_preproc pp = cs_img_preproc_default();
        cs_error err = {0};
        assert_int_equal(cs_img_preproc_from_json(e->sidecar, &pp, NULL, &err), CS_OK);
    }
    assert_null(cs_models_find("nope"));
    /* 1000 ImageNet labels */
    int lines = 0;
    for (const char *p = cs_models_imagenet_labels; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, 1000);
}

static void test_sha256_file(void **state) {
    (void)state;
    char p[] = "/tmp/cs_test_sha_XXXXXX";
    int fd = mkstemp(p);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "abc", 3), 3);
    close(fd);
    char hex[65];
    cs_error err = {0};
    assert_int_equal(cs_models_sha256_file(p, hex, &err), CS_OK);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    unlink(p);
    assert_int_equal(cs_models_sha256_file(p, hex, &err), CS_EIO);
}

static void test_pull_rejects_bad_names(void **state) {
    (void)state;
    cs_models_entry e = {.name = "../x", .url = "http://127.0.0.1:1/x", .sha256 = NULL};
    cs_models_pull_options o = cs_models_pull_default_options();
    o.dir = "/tmp/cs_test_pull_never";
    cs_error err = {0};
    assert_int_equal(cs_models_pull(&e, &o, NULL, &err), CS_EINVAL);
    e.name = "ok";
    e.sha256 = "ABC";
    assert_int_equal(cs_models_pull(&e, &o, NULL, &err), CS_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_model_loads),
        cmocka_unit_test(test_default_model_classifies_eval_small),
        cmocka_unit_test(test_pointing_game),
        cmocka_unit_test(test_energy_in_mask),
        cmocka_unit_test(test_auc),
        cmocka_unit_test(test_perturb),
        cmocka_unit_test(test_eval_set_layout),
        cmocka_unit_test(test_catalog),
        cmocka_unit_test(test_sha256_file),
        cmocka_unit_test(test_pull_rejects_bad_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
