/* Unit tests for src/util/npy.c: round trips through cs_npy_save /
 * cs_npy_load, and rejection of everything that is not a little-endian
 * float32 C-order array. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "camserve/npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers ----------------------------------------------------------- */

static char *tmp_path(void) {
    char *p = strdup("/tmp/cs_test_npy_XXXXXX");
    assert_non_null(p);
    int fd = mkstemp(p);
    assert_true(fd >= 0);
    close(fd);
    return p;
}

/* A hand-written .npy image: version 1.0 header `dict` padded to 64 bytes,
 * then `nbytes` of data (the pattern 0,1,2,... as float32). */
static size_t make_npy(unsigned char *buf, size_t cap, const char *dict, size_t nfloats) {
    size_t dl = strlen(dict);
    size_t total = 10 + dl + 1;
    size_t pad = (64 - total % 64) % 64;
    size_t hlen = dl + pad + 1;
    size_t len = 10 + hlen + nfloats * 4;
    assert_true(len <= cap);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)(hlen & 0xff);
    buf[9] = (unsigned char)(hlen >> 8);
    memcpy(buf + 10, dict, dl);
    memset(buf + 10 + dl, ' ', pad);
    buf[10 + dl + pad] = '\n';
    for (size_t i = 0; i < nfloats; i++) {
        float f = (float)i;
        memcpy(buf + 10 + hlen + i * 4, &f, 4);
    }
    return len;
}

static void round_trip(int ndim, const int64_t *dims) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= dims[i];
    float *x = malloc((size_t)(n ? n : 1) * sizeof(float));
    assert_non_null(x);
    for (int64_t i = 0; i < n; i++) x[i] = (float)i * 0.25f - 3.0f + (i % 3 ? 1e-7f : -1e30f);
    char *path = tmp_path();
    cs_error err = {0};
    assert_int_equal(cs_npy_save(path, x, ndim, dims, &err), CS_OK);

    cs_npy npy;
    cs_status st = cs_npy_load(path, &npy, &err);
    if (st != CS_OK) fail_msg("load %dD: %s", ndim, err.msg);
    assert_int_equal(npy.ndim, ndim);
    for (int i = 0; i < ndim; i++) assert_int_equal(npy.dims[i], dims[i]);
    assert_int_equal(cs_npy_count(&npy), n);
    if (n) assert_memory_equal(npy.data, x, (size_t)n * sizeof(float));

    /* The header must be what numpy writes: a multiple of 64 bytes, '\n'-terminated. */
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    unsigned char pre[10];
    assert_int_equal(fread(pre, 1, 10, f), 10);
    size_t hlen = (size_t)pre[8] | ((size_t)pre[9] << 8);
    assert_int_equal((10 + hlen) % 64, 0);
    char hdr[512];
    assert_true(hlen < sizeof hdr);
    assert_int_equal(fread(hdr, 1, hlen, f), hlen);
    hdr[hlen] = '\0';
    assert_int_equal(hdr[hlen - 1], '\n');
    assert_non_null(strstr(hdr, "'descr': '<f4'"));
    if (ndim == 1) {
        char want[64];
        snprintf(want, sizeof want, "'shape': (%lld,)", (long long)dims[0]);
        assert_non_null(strstr(hdr, want));
    }
    fclose(f);

    cs_npy_free(&npy);
    assert_null(npy.data);
    unlink(path);
    free(path);
    free(x);
}

/* ---- round trips ------------------------------------------------------- */

static void test_round_trip_1d(void **state) {
    (void)state;
    int64_t d1[1] = {7};
    round_trip(1, d1);
    int64_t d0[1] = {1};
    round_trip(1, d0);
}

static void test_round_trip_2d(void **state) {
    (void)state;
    int64_t d[2] = {2, 1000};
    round_trip(2, d);
}

static void test_round_trip_4d(void **state) {
    (void)state;
    int64_t d[4] = {2, 3, 16, 17};
    round_trip(4, d);
}

static void test_parse_numpy_header(void **state) {
    (void)state;
    /* Exactly what numpy 1.24 writes for np.zeros((2,3), np.float32). */
    unsigned char buf[256];
    size_t len = make_npy(buf, sizeof buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 6);
    cs_npy npy;
    cs_error err = {0};
    assert_int_equal(cs_npy_parse(buf, len, &npy, &err), CS_OK);
    assert_int_equal(npy.ndim, 2);
    assert_int_equal(npy.dims[0], 2);
    assert_int_equal(npy.dims[1], 3);
    assert_true(npy.data[5] == 5.0f);
    cs_npy_free(&npy);

    /* A 0-d array (shape ()) holds one element. */
    len = make_npy(buf, sizeof buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 1);
    assert_int_equal(cs_npy_parse(buf, len, &npy, &err), CS_OK);
    assert_int_equal(npy.ndim, 0);
    assert_int_equal(cs_npy_count(&npy), 1);
    cs_npy_free(&npy);

    /* Trailing bytes after the data are tolerated. */
    len = make_npy(buf, sizeof buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 3);
    assert_int_equal(cs_npy_parse(buf, len, &npy, &err), CS_OK);
    cs_npy_free(&npy);
}

static void test_golden_input_loads(void **state) {
    (void)state;
    cs_npy npy;
    cs_error err = {0};
    cs_status st = cs_npy_load(CS_SOURCE_DIR "/tests/golden/resnet_basic/input.npy", &npy, &err);
    if (st != CS_OK) fail_msg("%s", err.msg);
    assert_int_equal(npy.ndim, 4);
    assert_int_equal(npy.dims[0], 2);
    assert_int_equal(npy.dims[1], 3);
    cs_npy_free(&npy);
}

/* ---- rejections -------------------------------------------------------- */

static void expect_reject(const unsigned char *buf, size_t len, cs_status want, const char *needle) {
    cs_npy npy;
    cs_error err = {0};
    cs_status st = cs_npy_parse(buf, len, &npy, &err);
    if (st != want) fail_msg("status %d (%s), want %d; msg: %s", st, cs_status_str(st), want, err.msg);
    assert_null(npy.data);
    assert_true(err.msg[0] != '\0');
    if (needle && !strstr(err.msg, needle)) fail_msg("message '%s' lacks '%s'", err.msg, needle);
}

static void test_reject_bad_magic(void **state) {
    (void)state;
    unsigned char buf[256];
    size_t len = make_npy(buf, sizeof buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 2);
    buf[1] = 'X';
    expect_reject(buf, len, CS_EFORMAT, "magic");
    expect_reject(buf, 0, CS_EFORMAT, NULL);
    expect_reject((const unsigned char *)"\x93NUMPY", 6, CS_EFORMAT, NULL);
    /* unknown version */
    len = make_npy(buf, sizeof buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 2);
    buf[6] = 9;
    expect_reject(buf, len, CS_EFORMAT, "version");
}

static void test_reject_float64(void **state) {
    (void)state;
    unsigned char buf[256];
    size_t len = make_npy(buf, sizeof buf, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 4);
    expect_reject(buf, len, CS_EUNSUPPORTED, "float32");
    len = make_npy(buf, sizeof buf, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 2);
    expect_reject(buf, len, CS_EUNSUPPORTED, "float32");
    len = make_npy(buf, sizeof buf, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", 2);
    expect_reject(buf, len, CS_EUNSUPPORTED, NULL);
}

static void test_reject_fortran_order(void **state) {
    (void)state;
    unsigned char buf[256];
    size_t len = make_npy(buf, sizeof buf, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 6);
    expect_reject(buf, len, CS_EUNSUPPORTED, "C order");
}

static void test_reject_truncated(void **state) {
    (void)state;
    unsigned char buf[256];
    size_t len = make_npy(buf, sizeof buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 6);
    /* every strict prefix fails cleanly */
    for (size_t l = 0; l < len; l++) {
        cs_npy npy;
        cs_error err = {0};
        cs_status st = cs_npy_parse(buf, l, &npy, &err);
        if (st == CS_OK) fail_msg("prefix of %zu/%zu bytes accepted", l, len);
        assert_null(npy.data);
    }
    expect_reject(buf, len - 1, CS_EFORMAT, "truncated");
    /* header length pointing past the end */
    buf[8] = 0xff;
    buf[9] = 0x7f;
    expect_reject(buf, len, CS_EFORMAT, "truncated");
}

static void test_reject_bad_shape(void **state) {
    (void)state;
    unsigned char buf[256];
    size_t len = make_npy(buf, sizeof buf, "{'descr': '<f4', 'fortran_order': False, }", 0);
    expect_reject(buf, len, CS_EFORMAT, "shape");
    len = make_npy(buf, sizeof buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", 2);
    expect_reject(buf, len, CS_EFORMAT, "shape");
    len = make_npy(buf, sizeof buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 1);
    expect_reject(buf, len, CS_EUNSUPPORTED, "dims");
    /* a huge shape must not allocate or overflow */
    len = make_npy(buf, sizeof buf,
                   "{'descr': '<f4', 'fortran_order': False, 'shape': (2147483648, 2147483648, 4), }", 0);
    cs_npy npy;
    cs_error err = {0};
    assert_int_not_equal(cs_npy_parse(buf, len, &npy, &err), CS_OK);
    assert_null(npy.data);
}

static void test_load_missing_file(void **state) {
    (void)state;
    cs_npy npy;
    cs_error err = {0};
    const char *p = "/nonexistent/dir/x.npy";
    assert_int_equal(cs_npy_load(p, &npy, &err), CS_EIO);
    assert_non_null(strstr(err.msg, p));
    assert_null(npy.data);
}

static void test_load_error_names_file(void **state) {
    (void)state;
    char *path = tmp_path();
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("not a numpy file at all", f);
    fclose(f);
    cs_npy npy;
    cs_error err = {0};
    assert_int_equal(cs_npy_load(path, &npy, &err), CS_EFORMAT);
    assert_non_null(strstr(err.msg, path));
    unlink(path);
    free(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_1d),
        cmocka_unit_test(test_round_trip_2d),
        cmocka_unit_test(test_round_trip_4d),
        cmocka_unit_test(test_parse_numpy_header),
        cmocka_unit_test(test_golden_input_loads),
        cmocka_unit_test(test_reject_bad_magic),
        cmocka_unit_test(test_reject_float64),
        cmocka_unit_test(test_reject_fortran_order),
        cmocka_unit_test(test_reject_truncated),
        cmocka_unit_test(test_reject_bad_shape),
        cmocka_unit_test(test_load_missing_file),
        cmocka_unit_test(test_load_error_names_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
